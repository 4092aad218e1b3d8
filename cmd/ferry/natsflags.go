package main

import (
	"flag"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsAuth are the credentials and TLS settings for joining a NATS server
// that requires them; every command that talks to NATS takes them.
type natsAuth struct {
	user, password, token, creds, nkey string
	tlsCA, tlsCert, tlsKey             string
}

func natsAuthFlags(fs *flag.FlagSet) *natsAuth {
	a := &natsAuth{}
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

// options turns the flags into nats.Options.
func (a *natsAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
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
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
