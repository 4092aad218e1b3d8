package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// helpListing is the command names `ferry help` lists, in order.
func helpListing(t *testing.T) []string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"help"}, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("ferry help: %v %q", err, errOut.String())
	}
	_, list, ok := strings.Cut(out.String(), "\nCommands:\n")
	if !ok {
		t.Fatalf("ferry help has no command list: %q", out.String())
	}
	var names []string
	for line := range strings.Lines(list) {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		names = append(names, strings.Fields(line)[0])
	}
	return names
}

func TestFerryHelpListsEveryCommandAndEveryListedCommandDispatches(t *testing.T) {
	listed := helpListing(t)
	var table []string
	for _, c := range commands {
		table = append(table, c.name)
	}
	if !slices.Equal(listed, table) {
		t.Fatalf("ferry help lists %q, the dispatch table holds %q", listed, table)
	}
	for _, name := range listed {
		// -h reaches the command's own flag set, so ErrHelp proves the
		// name dispatched to a command rather than to "unknown command".
		var out, errOut bytes.Buffer
		err := Run(context.Background(), []string{name, "-h"}, strings.NewReader(""), &out, &errOut)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("ferry %s -h: %v, want flag.ErrHelp", name, err)
		}
		if !strings.Contains(errOut.String(), name) {
			t.Errorf("ferry %s -h printed no usage naming it: %q", name, errOut.String())
		}
	}
	var errOut bytes.Buffer
	if err := Run(context.Background(), []string{"sail"}, strings.NewReader(""), &bytes.Buffer{}, &errOut); !errors.Is(err, errUsage) {
		t.Errorf("ferry sail: %v, want a usage error", err)
	}
}

// TestEveryCommandFunctionIsInTheDispatchTable reads this package's source:
// a function with a command's signature that the table does not hold is a
// command nobody can run and `ferry help` does not list.
func TestEveryCommandFunctionIsInTheDispatchTable(t *testing.T) {
	inTable := map[string]bool{}
	for _, c := range commands {
		name := runtime.FuncForPC(reflect.ValueOf(c.run).Pointer()).Name()
		inTable[name[strings.LastIndex(name, ".")+1:]] = true
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := 0
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			// Run is the dispatcher itself.
			if !ok || fn.Recv != nil || fn.Name.Name == "Run" || !isCommandSignature(fn.Type) {
				continue
			}
			found++
			if !inTable[fn.Name.Name] {
				t.Errorf("%s: %s has a command's signature but is not in the dispatch table", path, fn.Name.Name)
			}
		}
	}
	if found != len(commands) {
		t.Errorf("found %d command functions, the table holds %d", found, len(commands))
	}
}

// isCommandSignature reports whether ft is runFunc's signature:
// (context.Context, []string, io.Reader, io.Writer, io.Writer) error.
func isCommandSignature(ft *ast.FuncType) bool {
	var params []string
	for _, p := range ft.Params.List {
		typ := typeText(p.Type)
		for range max(len(p.Names), 1) {
			params = append(params, typ)
		}
	}
	want := []string{"context.Context", "[]string", "io.Reader", "io.Writer", "io.Writer"}
	return slices.Equal(params, want) && ft.Results != nil && len(ft.Results.List) == 1 && typeText(ft.Results.List[0].Type) == "error"
}

func typeText(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return typeText(e.X) + "." + e.Sel.Name
	case *ast.ArrayType:
		return "[]" + typeText(e.Elt)
	}
	return "?"
}
