// Package client is what callers import to write to memcached through the
// coordinator. A Client talks to the coordinator's etcd; Register makes a
// Caller, one incarnation of a registration name, whose submissions return
// tokens. The leader applies accepted operations in token order.
//
//	c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:2379"}})
//	caller, err := c.Register(ctx, "agent-7", client.RegisterOptions{})
//	tok, err := caller.Set(ctx, "config", []byte("v2"), 0)
//	err = caller.WaitApplied(ctx, tok) // read your write (G8)
package client

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Errors callers test for with errors.Is.
var (
	// ErrSuperseded: a newer incarnation of the name was registered (final).
	ErrSuperseded = tokenseq.ErrSuperseded
	// ErrExpired: the incarnation's lease expired or was revoked.
	ErrExpired = tokenseq.ErrExpired
	// ErrNameHeld: RegisterOptions.IfAbsent and a live process holds the name.
	ErrNameHeld = registry.ErrNameHeld
	// ErrInvalid: bad input (key, value, expiration, name); nothing was written.
	ErrInvalid = ops.ErrInvalid
	// ErrInvalidName: a bad registration name or namespace.
	ErrInvalidName = keyspace.ErrInvalidName
	// ErrBadConfig: New was given an invalid Config (a bad namespace also
	// matches ErrInvalidName).
	ErrBadConfig = config.ErrBadConfig
)

// Token is the token of an accepted submission.
type Token = tokenseq.Token

// Config configures a Client.
type Config struct {
	// Etcd is an existing etcd client to use; when nil, one is dialled to
	// Endpoints and closed by Close.
	Etcd *clientv3.Client
	// Endpoints of the etcd cluster, used when Etcd is nil.
	Endpoints []string
	// DialTimeout bounds the first connection; default 5s.
	DialTimeout time.Duration
	// Namespace; default keyspace.DefaultNamespace.
	Namespace string
	// Limits for validation; zero means memcached's defaults.
	Limits ops.Limits
}

// Client submits operations on behalf of callers.
type Client struct {
	etcd     *clientv3.Client
	ownsEtcd bool
	layout   keyspace.Layout
	reg      *registry.Registry
	sub      *tokenseq.Submitter
	applied  *tokenseq.AppliedWatcher
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = keyspace.DefaultNamespace
	}
	layout, err := keyspace.New(cfg.Namespace)
	if err != nil {
		return nil, config.Errorf("client", "Namespace", "%w", err)
	}
	cli, owns := cfg.Etcd, false
	if cli == nil {
		if len(cfg.Endpoints) == 0 {
			return nil, config.Errorf("client", "Endpoints", "none given, and Etcd is nil")
		}
		if cfg.DialTimeout == 0 {
			cfg.DialTimeout = 5 * time.Second
		}
		cli, err = clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("client: connect to etcd: %w", err)
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

// Registry returns the registry of the namespace.
func (c *Client) Registry() *registry.Registry { return c.reg }

// RegisterOptions configure Register.
type RegisterOptions = registry.RegisterConfig

// Register registers name and returns the new incarnation. By default it
// supersedes a live incarnation of name (a restart); set IfAbsent to refuse
// instead, and WaitDrained to wait until the earlier incarnations' operations
// are applied (G7).
func (c *Client) Register(ctx context.Context, name string, opts RegisterOptions) (*Caller, error) {
	inc, err := c.reg.Register(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	return &Caller{client: c, inc: inc}, nil
}

// WaitApplied blocks until tok is applied to memcached (G8) or ctx ends.
// Concurrent waits share one watch of the applied watermark (see
// tokenseq.AppliedWatcher).
func (c *Client) WaitApplied(ctx context.Context, tok Token) error {
	return c.applied.Wait(ctx, tok)
}

// Caller is one incarnation of a registration name. It is safe for
// concurrent use.
type Caller struct {
	client *Client
	inc    *registry.Incarnation
}

// Name is the registration name.
func (c *Caller) Name() string { return c.inc.Name }

// Incarnation is the incarnation token.
func (c *Caller) Incarnation() int64 { return c.inc.Incarnation }

// Done is closed when the incarnation's lease is lost or Close is called.
func (c *Caller) Done() <-chan struct{} { return c.inc.Done() }

// Submit submits ops as one batch, accepted or refused as a whole. A refused
// batch returns an error wrapping ErrSuperseded or ErrExpired; bad input an
// error wrapping ErrInvalid.
func (c *Caller) Submit(ctx context.Context, batch ...ops.Op) (Token, error) {
	return c.client.sub.Submit(ctx, c.inc.Name, c.inc.Incarnation, "", batch)
}

// SubmitWithID is Submit with a caller-chosen batch id; see tokenseq.
func (c *Caller) SubmitWithID(ctx context.Context, id string, batch ...ops.Op) (Token, error) {
	return c.client.sub.Submit(ctx, c.inc.Name, c.inc.Incarnation, id, batch)
}

// Set submits a set of key to value with the given expiration (zero: none).
func (c *Caller) Set(ctx context.Context, key string, value []byte, expiration time.Duration) (Token, error) {
	return c.Submit(ctx, ops.Set(key, value, expiration))
}

// Delete submits a delete of key.
func (c *Caller) Delete(ctx context.Context, key string) (Token, error) {
	return c.Submit(ctx, ops.Delete(key))
}

// WaitApplied blocks until tok is applied (G8).
func (c *Caller) WaitApplied(ctx context.Context, tok Token) error {
	return c.client.WaitApplied(ctx, tok)
}

// Close unregisters the incarnation. Its accepted operations are still
// applied (G4).
func (c *Caller) Close(ctx context.Context) error { return c.inc.Close(ctx) }
