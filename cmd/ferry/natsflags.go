package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsAuth are the credentials and TLS settings for joining a NATS server
// that requires them; every command that talks to NATS takes them. With
// no credential flag, a command signs in with the NKey ferry serve
// generated for its role in <--data>/nats, so it works against a local
// ferry serve as it is.
type natsAuth struct {
	user, password, token, creds, nkey string
	tlsCA, tlsCert, tlsKey             string
	role                               string // natsembed.Role…; "" for none
	data                               flag.Value
}

// natsAuthFlags adds the --nats-* flags to fs, and --data unless the
// command has it already. role is the embedded server's user the command
// signs in as by default ("" for none).
func natsAuthFlags(fs *flag.FlagSet, role string) *natsAuth {
	a := &natsAuth{role: role}
	if role != "" {
		if fs.Lookup("data") == nil {
			fs.String("data", "./ferry-data", "ferry serve's data `dir`: its nats/"+role+".nk signs in when no --nats-* credential is given")
		}
		a.data = fs.Lookup("data").Value
	}
	fs.StringVar(&a.user, "nats-user", "", "NATS user name")
	fs.StringVar(&a.password, "nats-password", "", "NATS password")
	fs.StringVar(&a.token, "nats-token", "", "NATS authentication token")
	fs.StringVar(&a.creds, "nats-creds", "", "NATS credentials `file` (JWT + NKey)")
	fs.StringVar(&a.nkey, "nats-nkey", "", "NATS NKey seed `file`")
	fs.StringVar(&a.tlsCA, "nats-tls-ca", "", "CA `file` to verify the NATS server")
	fs.StringVar(&a.tlsCert, "nats-tls-cert", "", "client certificate `file` for NATS")
	fs.StringVar(&a.tlsKey, "nats-tls-key", "", "client key `file` for NATS")
	return a
}

// defaultSeed is the role's NKey seed in the data dir when no credential
// flag is set and the file exists, else "".
func (a *natsAuth) defaultSeed() string {
	if a.role == "" || a.explicit() {
		return ""
	}
	if _, err := os.Stat(a.seedPath()); err != nil {
		return ""
	}
	return a.seedPath()
}

func (a *natsAuth) seedPath() string {
	return natsembed.SeedFile(node.CredentialsDir(a.data.String()), a.role)
}

// explicit reports whether a credential flag is set.
func (a *natsAuth) explicit() bool {
	return a.user != "" || a.token != "" || a.creds != "" || a.nkey != ""
}

// options turns the flags into nats.Options.
func (a *natsAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	if seed := a.defaultSeed(); seed != "" {
		opt, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", seed, err)
		}
		opts = append(opts, opt)
	}
	if a.user != "" {
		opts = append(opts, nats.UserInfo(a.user, a.password))
	}
	if a.token != "" {
		opts = append(opts, nats.Token(a.token))
	}
	if a.creds != "" {
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if a.nkey != "" {
		opt, err := nats.NkeyOptionFromSeed(a.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, opt)
	}
	if a.tlsCA != "" {
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if (a.tlsCert == "") != (a.tlsKey == "") {
		return nil, fmt.Errorf("%w: --nats-tls-cert and --nats-tls-key go together", errUsage)
	}
	if a.tlsCert != "" {
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	return opts, nil
}

// connect opens a NATS connection named for the command and its
// JetStream context.
func (a *natsAuth) connect(url, name string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := a.options()
	if err != nil {
		return nil, nil, err
	}
	opts = append(append(opts, nats.Name(name)), extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, a.connectError(url, err)
	}
	js, err := jetlog.NewJetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// connectError says where credentials were looked for when the server
// refused a command that had none.
func (a *natsAuth) connectError(url string, err error) error {
	err = fmt.Errorf("connect to NATS at %s: %w", url, err)
	if a.role == "" || a.explicit() || a.defaultSeed() != "" || !errors.Is(err, nats.ErrAuthorization) {
		return err
	}
	return fmt.Errorf("%w (no credentials given and none at %s: pass ferry serve's --data, or --nats-nkey)", err, a.seedPath())
}

// natsURLFromEnv sets --nats from NATS_URL, the stock nats CLI's variable,
// on the commands that always talk to NATS (their --nats has a default);
// FERRY_NATS and the command line still win. Where --nats is a choice
// (serve, replay, publish, pack: empty means the embedded server or HTTP)
// NATS_URL is not read, so a shell set up for the nats CLI does not move
// them onto another server.
func natsURLFromEnv(fs *flag.FlagSet) error {
	f := fs.Lookup("nats")
	v, ok := os.LookupEnv("NATS_URL")
	if f == nil || f.DefValue == "" || !ok {
		return nil
	}
	return fs.Set("nats", v)
}
