package natsembed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialsAreMadeOnceAndKeptPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	first, err := LoadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, role := range Roles {
		key := first.PublicKey(role)
		if !strings.HasPrefix(key, "U") || seen[key] {
			t.Fatalf("%s: public key %q (a user key, one per role)", role, key)
		}
		seen[key] = true
		if got := again.PublicKey(role); got != key {
			t.Fatalf("%s: key %q on the second load, %q on the first", role, got, key)
		}
		st, err := os.Stat(first.SeedFile(role))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v", first.SeedFile(role), err, st.Mode().Perm())
		}
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v", dir, err)
	}
}

func TestAnUnreadableSeedIsAnErrorNotANewKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(SeedFile(dir, RolePublish), []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCredentials(dir); err == nil || !strings.Contains(err.Error(), "publish.nk") {
		t.Fatalf("LoadCredentials over a broken seed: %v", err)
	}
}
