package client_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A user copies the examples into their own module: there the only
// ferry packages they can import are the public ones. This builds
// example_test.go in a module outside ferry's (ferry replaced by this
// checkout, offline from the module cache, ferry's go.sum for the
// versions it pins) and fails on anything that does not compile there,
// such as an import of ferry's internal packages.
func TestTheExamplesCompileOutsideFerrysModule(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := vetOutside(t, root, example); err != nil {
		t.Fatalf("the client's examples do not build outside ferry's module: %v\n%s", err, out)
	}
	// The check itself: an internal import is what it catches.
	internal := []byte("package client_test\n\nimport _ \"github.com/ferry-dev/ferry/internal/natsembed\"\n")
	out, err := vetOutside(t, root, internal)
	if err == nil || !strings.Contains(out, "use of internal package") {
		t.Fatalf("an internal import built outside ferry's module: %v\n%s", err, out)
	}
}

// vetOutside runs go vet on src as the external test of a package
// "client" in a new module that requires ferry at root.
func vetOutside(t *testing.T, root string, src []byte) (string, error) {
	t.Helper()
	dir := t.TempDir()
	goMod := "module example.com/storageservice\n\ngo 1.26\n\n" +
		"require github.com/ferry-dev/ferry v0.0.0\n\n" +
		"replace github.com/ferry-dev/ferry => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"go.mod":                 []byte(goMod),
		"go.sum":                 sum,
		"client/doc.go":          []byte("// Package client is the user's own.\npackage client\n"),
		"client/example_test.go": src,
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "vet", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
