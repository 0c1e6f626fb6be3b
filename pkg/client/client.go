package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// DefaultDialTimeout bounds the first connection to etcd when
// Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Token is the token of an accepted submission.
type Token = tokenseq.Token

// Config configures a Client. Zero values mean the defaults noted.
type Config struct {
	// Etcd is an existing etcd client to use; when nil, one is dialled to
	// Endpoints and closed by Close.
	Etcd *clientv3.Client
	// Endpoints of the etcd cluster, required when Etcd is nil.
	Endpoints []string
	// DialTimeout bounds the first connection; zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Security holds the TLS files and the etcd user of the connection
	// New dials (unused when Etcd is set); the zero value is a plain
	// connection without a user. See package etcdconn.
	Security etcdconn.Security
	// EtcdLogger receives the log of the etcd client New dials; nil
	// means zap.NewNop().
	EtcdLogger *zap.Logger
	// Namespace; empty means keyspace.DefaultNamespace.
	Namespace string
	// Limits for validation; zero means memcached's defaults.
	Limits ops.Limits
}

// Validate checks the config; its errors match ErrBadConfig and name the
// field. A bad Namespace also matches ErrInvalidName. When Etcd is nil,
// the connection settings are checked as etcdconn.Config.Validate checks
// them (a Security field's error names "Security.<field>").
func (c *Config) Validate() error {
	if c.Namespace != "" {
		if _, err := keyspace.New(c.Namespace); err != nil {
			return config.Errorf("client", "Namespace", "%w", err)
		}
	}
	if c.Etcd != nil {
		return nil
	}
	if len(c.Endpoints) == 0 {
		return config.Errorf("client", "Endpoints", "none given, and Etcd is nil")
	}
	if err := c.conn().Validate(); err != nil {
		var fe *config.FieldError
		if errors.As(err, &fe) {
			field := fe.Field
			if field != "Endpoints" && field != "DialTimeout" {
				field = "Security." + field
			}
			return &config.FieldError{Pkg: "client", Field: field, Rule: fe.Rule, Err: fe.Err}
		}
		return err
	}
	return nil
}

// conn is how New reaches etcd when Etcd is nil.
func (c *Config) conn() etcdconn.Config {
	return etcdconn.Config{
		Endpoints: c.Endpoints, DialTimeout: c.DialTimeout, Security: c.Security, Logger: c.EtcdLogger,
	}
}

// withDefaults fills in the defaults of unset fields.
func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = keyspace.DefaultNamespace
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	return c
}

// Client submits operations on behalf of callers. It is safe for
// concurrent use; one Client serves every Caller and Session of a process.
type Client struct {
	etcd     *clientv3.Client
	ownsEtcd bool
	layout   keyspace.Layout
	reg      *registry.Registry
	sub      *tokenseq.Submitter
	applied  *tokenseq.AppliedWatcher
}

// New returns a Client. An invalid cfg returns an error matching
// ErrBadConfig. When cfg.Etcd is nil, New dials etcd and checks that it
// answers within DialTimeout (etcdconn.Dial); its errors then match
// etcdconn.ErrUnreachable, etcdconn.ErrAuth or etcdconn.ErrTLS.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	layout := keyspace.MustNew(cfg.Namespace)
	cli, owns := cfg.Etcd, false
	if cli == nil {
		var err error
		cli, err = etcdconn.Dial(context.Background(), cfg.conn())
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		owns = true
	}
	sub, err := tokenseq.NewSubmitter(tokenseq.SubmitterConfig{Etcd: cli, Layout: layout, Limits: cfg.Limits})
	if err != nil {
		if owns {
			cli.Close()
		}
		return nil, err
	}
	return &Client{
		etcd: cli, ownsEtcd: owns, layout: layout,
		reg:     registry.New(cli, layout),
		sub:     sub,
		applied: tokenseq.NewAppliedWatcher(cli, layout),
	}, nil
}

// Close releases the etcd connection if the Client dialled it.
func (c *Client) Close() error {
	if c.ownsEtcd {
		return c.etcd.Close()
	}
	return nil
}

// Etcd returns the etcd client.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// Layout returns the namespace's key layout.
func (c *Client) Layout() keyspace.Layout { return c.layout }

// WaitApplied blocks until tok is applied to memcached (G8) or ctx ends.
// Concurrent waits share one watch of the applied watermark (see
// tokenseq.AppliedWatcher).
func (c *Client) WaitApplied(ctx context.Context, tok Token) error {
	return c.applied.Wait(ctx, tok)
}
