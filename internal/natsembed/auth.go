package natsembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Roles of the embedded server's users. Each is an NKey whose seed lives
// in <data>/nats/<role>.nk; the stock nats CLI takes it as --nkey.
const (
	// RoleFerry is ferry's own components: serve, piece workers, replay.
	RoleFerry = "ferry"
	// RolePublish is a storage service: it may publish car.replicated and
	// read receipts, nothing else.
	RolePublish = "publish"
	// RoleAdmin is an operator: everything, as ferry itself.
	RoleAdmin = "admin"
)

// Roles lists every role, in the order they are printed.
var Roles = []string{RoleFerry, RolePublish, RoleAdmin}

// PublishAccount is the account of the publish user. ferry's streams live
// in the global account ($G, where they always were); the publish user is
// kept out of it because JetStream does not check a push consumer's
// deliver subject against its creator's permissions: a consumer on
// ferry's own FERRY_RECEIPTS could deliver receipts into FERRY_AGG. In an
// account of its own it reaches ferry only through what ferry exports,
// and reads a mirror of the receipts.
const PublishAccount = "PUBLISH"

// PublishAPI is the JetStream API prefix under which ferry's account
// reaches the publish account's JetStream, to create the receipts mirror.
const PublishAPI = "$JS.publish.API"

// receiptsAPI and receiptsDeliver are the API prefix and deliver subject
// prefix the mirror in the publish account uses to read FERRY_RECEIPTS.
const (
	receiptsAPI     = "$JS.ferry.API"
	receiptsDeliver = "deliver.ferry.receipts"
)

// Credentials are the NKeys of the roles, kept in a directory.
type Credentials struct {
	Dir  string
	keys map[string]string // role → public key
}

// LoadCredentials reads the role seeds in dir, creating the dir (0700) and
// any missing seed (0600) on first use, so a data dir keeps its
// credentials across restarts.
func LoadCredentials(dir string) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	c := &Credentials{Dir: dir, keys: map[string]string{}}
	for _, role := range Roles {
		pub, err := loadOrCreateSeed(c.SeedFile(role))
		if err != nil {
			return nil, fmt.Errorf("nats credentials %s: %w", role, err)
		}
		c.keys[role] = pub
	}
	return c, nil
}

// SeedFile is the path of a role's NKey seed.
func (c *Credentials) SeedFile(role string) string { return SeedFile(c.Dir, role) }

// SeedFile is the path of a role's NKey seed in the credentials dir.
func SeedFile(dir, role string) string { return filepath.Join(dir, role+".nk") }

// PublicKey is a role's public NKey.
func (c *Credentials) PublicKey(role string) string { return c.keys[role] }

// Option signs in as role.
func (c *Credentials) Option(role string) (nats.Option, error) {
	return nats.NkeyOptionFromSeed(c.SeedFile(role))
}

func loadOrCreateSeed(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = createSeed(path)
	}
	if err != nil {
		return "", err
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

// createSeed writes a new user seed to path, failing if the file appeared
// meanwhile (two processes starting on one data dir keep the first's).
func createSeed(path string) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return nil, err
	}
	// The key pair's Wipe clears seed's bytes when this returns.
	return bytes.Clone(seed), f.Close()
}

// PublishPermissions are what the publish user may do in its account:
// publish car.replicated (answered through ferry's export) and read the
// receipts mirror with consumers it creates, fetches from and acks. No
// stream or consumer deletion, no purge, no other subject.
func PublishPermissions(prefix string) *server.Permissions {
	const api, rs = "$JS.API.", "FERRY_RECEIPTS"
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			prefix + "in.car.replicated",
			api + "INFO",
			api + "STREAM.INFO." + rs,
			api + "STREAM.MSG.GET." + rs,
			api + "DIRECT.GET." + rs + ".>",
			api + "CONSUMER.CREATE." + rs,
			api + "CONSUMER.CREATE." + rs + ".>",
			api + "CONSUMER.DURABLE.CREATE." + rs + ".*",
			api + "CONSUMER.INFO." + rs + ".*",
			api + "CONSUMER.NAMES." + rs,
			api + "CONSUMER.LIST." + rs,
			api + "CONSUMER.MSG.NEXT." + rs + ".*",
			"$JS.ACK." + rs + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}

// authOptions add the three users and the publish account to opts.
func authOptions(opts *server.Options, c *Credentials, prefix string) *server.Account {
	pub := server.NewAccount(PublishAccount)
	opts.Accounts = []*server.Account{pub}
	opts.Nkeys = []*server.NkeyUser{
		{Nkey: c.PublicKey(RoleFerry)},
		{Nkey: c.PublicKey(RoleAdmin)},
		{Nkey: c.PublicKey(RolePublish), Account: pub, Permissions: PublishPermissions(prefix)},
	}
	return pub
}

// wireAccounts enables JetStream on both accounts and connects them:
// ferry's account offers car.replicated and what a mirror of its receipts
// needs; the publish account offers ferry its JetStream API (to create
// that mirror).
func wireAccounts(s *server.Server, prefix string) error {
	g := s.GlobalAccount()
	pub, err := s.LookupAccount(PublishAccount)
	if err != nil {
		return err
	}
	unlimited := map[string]server.JetStreamAccountLimits{"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1}}
	for _, acc := range []*server.Account{g, pub} {
		if acc.JetStreamEnabled() {
			continue
		}
		if err := acc.EnableJetStream(unlimited, nil); err != nil {
			return fmt.Errorf("jetstream for account %s: %w", acc.Name, err)
		}
	}
	to := []*server.Account{pub}
	steps := []error{
		g.AddServiceExport(prefix+"in.car.replicated", to),
		g.AddServiceExport("$JS.API.CONSUMER.CREATE.FERRY_RECEIPTS", to),
		g.AddServiceExport("$JS.API.CONSUMER.CREATE.FERRY_RECEIPTS.>", to),
		g.AddServiceExport("$JS.FC.>", to),
		g.AddStreamExport(receiptsDeliver+".>", to),
		pub.AddServiceImport(g, prefix+"in.car.replicated", ""),
		pub.AddServiceImport(g, receiptsAPI+".CONSUMER.CREATE.FERRY_RECEIPTS", "$JS.API.CONSUMER.CREATE.FERRY_RECEIPTS"),
		pub.AddServiceImport(g, receiptsAPI+".CONSUMER.CREATE.FERRY_RECEIPTS.>", "$JS.API.CONSUMER.CREATE.FERRY_RECEIPTS.>"),
		pub.AddServiceImport(g, "$JS.FC.>", ""),
		pub.AddStreamImport(g, receiptsDeliver+".>", ""),
		pub.AddServiceExport("$JS.API.>", []*server.Account{g}),
		g.AddServiceImport(pub, PublishAPI+".>", "$JS.API.>"),
	}
	return errors.Join(steps...)
}

// EnsureReceiptsMirror creates (or updates) the publish account's
// FERRY_RECEIPTS, a mirror of ferry's, through nc, a connection of ferry's
// account that imports the publish account's JetStream API under
// PublishAPI. Receipts keep their sequences in the mirror.
func EnsureReceiptsMirror(ctx context.Context, nc *nats.Conn, replicas int) error {
	js, err := jetstream.NewWithAPIPrefix(nc, PublishAPI)
	if err != nil {
		return err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: jetlog.StreamReceipts, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
		Description: "mirror of ferry's FERRY_RECEIPTS for the publish account",
		Mirror: &jetstream.StreamSource{Name: jetlog.StreamReceipts,
			External: &jetstream.ExternalStream{APIPrefix: receiptsAPI, DeliverPrefix: receiptsDeliver}},
	})
	if err != nil {
		return fmt.Errorf("receipts mirror in account %s: %w", PublishAccount, err)
	}
	return nil
}
