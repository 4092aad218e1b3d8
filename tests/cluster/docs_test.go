package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/nats-io/nats-server/v2/server"
)

// The cluster tier (build tag cluster) starts its servers from
// docs/cluster; these checks run in every go test, so the files stay
// what docs/operations.md shows and what nats-server loads.

// TestTheAccountsFileIsTheOneTheSecurityDocsShow: docs/operations.md#nats
// shows ferry's accounts in a conf block; docs/cluster/accounts.conf is
// that block.
func TestTheAccountsFileIsTheOneTheSecurityDocsShow(t *testing.T) {
	var accounts string
	for _, block := range confBlocks(t) {
		if _, a, ok := strings.Cut(block, "accounts {"); ok && !strings.Contains(block, "cluster {") {
			accounts = a
		}
	}
	if accounts == "" {
		t.Fatal("docs/operations.md has no conf block with ferry's accounts")
	}
	_, file, ok := strings.Cut(read(t, "../../docs/cluster/accounts.conf"), "accounts {")
	if !ok {
		t.Fatal("docs/cluster/accounts.conf has no accounts")
	}
	if accounts != file {
		t.Fatalf("docs/cluster/accounts.conf differs from the accounts of docs/operations.md#nats:\n--- operations.md\n%s\n--- accounts.conf\n%s", accounts, file)
	}
}

// TestTheClusterSectionShowsN1Conf: docs/operations.md#a-3-node-cluster
// shows n1.conf as it is.
func TestTheClusterSectionShowsN1Conf(t *testing.T) {
	want := read(t, "../../docs/cluster/n1.conf")
	for _, block := range confBlocks(t) {
		if block == want {
			return
		}
	}
	t.Fatal("docs/operations.md shows no conf block equal to docs/cluster/n1.conf")
}

// confBlocks are the conf blocks of docs/operations.md.
func confBlocks(t *testing.T) []string {
	var blocks []string
	rest := read(t, "../../docs/operations.md")
	for {
		var block string
		var ok, ok2 bool
		_, rest, ok = strings.Cut(rest, "```conf\n")
		block, rest, ok2 = strings.Cut(rest, "```")
		if !ok || !ok2 {
			return blocks
		}
		blocks = append(blocks, block)
	}
}

// TestTheDocumentedServerConfigsLoad: nats-server accepts each node's
// file as it stands once the public keys are filled in, with its routes
// to the other two and ferry's accounts, and the three differ only in
// server_name.
func TestTheDocumentedServerConfigsLoad(t *testing.T) {
	creds, err := natsembed.LoadCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	accounts := strings.NewReplacer("UFERRY_PUBLIC_KEY", creds.PublicKey(natsembed.RoleFerry),
		"UADMIN_PUBLIC_KEY", creds.PublicKey(natsembed.RoleAdmin),
		"UPUBLISH_PUBLIC_KEY", creds.PublicKey(natsembed.RolePublish)).Replace(read(t, "../../docs/cluster/accounts.conf"))
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}
	var first string
	for i, name := range []string{"n1", "n2", "n3"} {
		path := filepath.Join("..", "..", "docs", "cluster", name+".conf")
		conf := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(conf, []byte(read(t, path)), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if opts.ServerName != name || !opts.JetStream || len(opts.Routes) != 3 || opts.Cluster.Name == "" {
			t.Fatalf("%s: server %q, JetStream %v, %d routes, cluster %q", path, opts.ServerName, opts.JetStream, len(opts.Routes), opts.Cluster.Name)
		}
		if opts.Cluster.Username == "" || opts.Cluster.Password == "" {
			t.Fatalf("%s: routes without authorization", path)
		}
		var accounts []string
		for _, a := range opts.Accounts {
			accounts = append(accounts, a.Name)
		}
		slices.Sort(accounts)
		if strings.Join(accounts, ",") != "FERRY,PUBLISH" {
			t.Fatalf("%s: accounts %v, want FERRY and PUBLISH", path, accounts)
		}
		text := strings.ReplaceAll(read(t, path), "server_name: "+name, "server_name: N")
		text = strings.ReplaceAll(text, "Server "+name+" of", "Server N of")
		if i == 0 {
			first = text
		} else if text != first {
			t.Fatalf("%s differs from n1.conf in more than server_name", path)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
