package client

import (
	"os/exec"
	"strings"
	"testing"
)

// A program that talks to ferry links the client, so the client must not
// drag in ferry's storage, CAR or commitment libraries: the wire types it
// needs live in packages that carry none of them (events, wire, jetlog),
// and a NATS client is enough, without the server.
func TestTheClientLinksNoHeavyLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, heavy := range []string{"go.etcd.io/bbolt", "github.com/ipld/go-car", "github.com/filecoin-project/go-fil-commp-hashhash", "github.com/filecoin-project/go-data-segment",
			// A client talks to a NATS server and an HTTP API: it runs
			// neither, nor exports metrics or stores CARs.
			"github.com/nats-io/nats-server", "github.com/prometheus", "github.com/minio/minio-go"} {
			if strings.HasPrefix(dep, heavy) {
				t.Errorf("client links %s", dep)
			}
		}
	}
}
