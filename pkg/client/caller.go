package client

import (
	"context"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// DefaultTTL is the lease TTL of an incarnation when the config's TTL is
// zero.
const DefaultTTL = registry.DefaultTTL

// RegisterConfig configures Register. Zero values mean the defaults noted;
// the fields it shares with SessionConfig mean the same there.
type RegisterConfig struct {
	// TTL is the lease TTL, within 1s..registry.MaxTTL; zero means
	// DefaultTTL.
	TTL time.Duration
	// Holder overrides the holder metadata; zero means the current process.
	Holder registry.Holder
	// IfAbsent makes Register fail with ErrNameHeld when a live incarnation
	// of the name exists. By default Register supersedes it.
	IfAbsent bool
	// WaitDrained makes Register, once registered, wait until every
	// operation of the name's earlier incarnations is applied (G7). That
	// needs a running coordinator leader. By default Register does not
	// wait; token order applies the earlier operations first all the same.
	WaitDrained bool
}

// Validate checks the config; its errors match ErrBadConfig and name the
// field.
func (c *RegisterConfig) Validate() error { return validateTTL(c.TTL) }

// validateTTL checks the TTL field of RegisterConfig and SessionConfig
// against registry.TTLSeconds' rule. Its error also matches
// registry.ErrBadTTL.
func validateTTL(ttl time.Duration) error { return registry.ValidateTTL("client", ttl) }

// Register registers name and returns the new incarnation. By default it
// supersedes a live incarnation of name (a restart); see RegisterConfig.
func (c *Client) Register(ctx context.Context, name string, cfg RegisterConfig) (*Caller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inc, err := c.reg.Register(ctx, name, registry.RegisterConfig{
		TTL: cfg.TTL, Holder: cfg.Holder, IfAbsent: cfg.IfAbsent, WaitDrained: cfg.WaitDrained,
	})
	if err != nil {
		return nil, denied(name, err)
	}
	return &Caller{client: c, inc: inc}, nil
}

// Caller is one incarnation of a registration name. It is safe for
// concurrent use.
type Caller struct {
	client *Client
	inc    *registry.Incarnation
}

// submitter is what Caller and Session both offer.
type submitter interface {
	Name() string
	Incarnation() int64
	Submit(ctx context.Context, batch ...ops.Op) (Token, error)
	Set(ctx context.Context, key string, value []byte, expiration time.Duration) (Token, error)
	Delete(ctx context.Context, key string) (Token, error)
	WaitApplied(ctx context.Context, tok Token) error
	Done() <-chan struct{}
	Err() error
	Close(ctx context.Context) error
}

var (
	_ submitter = (*Caller)(nil)
	_ submitter = (*Session)(nil)
)

// Name is the registration name.
func (c *Caller) Name() string { return c.inc.Name }

// Incarnation is the incarnation token.
func (c *Caller) Incarnation() int64 { return c.inc.Incarnation }

// Done is closed when the incarnation's lease is lost or Close is called.
// Err then says which.
func (c *Caller) Done() <-chan struct{} { return c.inc.Done() }

// Err returns nil while the incarnation's lease is kept alive, then why it
// ended.
func (c *Caller) Err() error { return c.inc.Err() }

// Submit submits ops as one batch, accepted or refused as a whole. A refused
// batch returns an error wrapping ErrSuperseded or ErrExpired; bad input an
// error wrapping ErrInvalid; a batch etcd's access control refuses, one
// wrapping ErrPermissionDenied.
func (c *Caller) Submit(ctx context.Context, batch ...ops.Op) (Token, error) {
	tok, err := c.client.sub.Submit(ctx, c.inc.Name, c.inc.Incarnation, "", batch)
	return tok, denied(c.inc.Name, err)
}

// SubmitWithID is Submit with a caller-chosen batch id: a second submission
// with the id of a stored batch returns that batch's token and stores
// nothing (see tokenseq.Submitter).
func (c *Caller) SubmitWithID(ctx context.Context, id string, batch ...ops.Op) (Token, error) {
	tok, err := c.client.sub.Submit(ctx, c.inc.Name, c.inc.Incarnation, id, batch)
	return tok, denied(c.inc.Name, err)
}

// Set submits a set of key to value with the given expiration (zero: none).
func (c *Caller) Set(ctx context.Context, key string, value []byte, expiration time.Duration) (Token, error) {
	return c.Submit(ctx, ops.Set(key, value, expiration))
}

// Delete submits a delete of key.
func (c *Caller) Delete(ctx context.Context, key string) (Token, error) {
	return c.Submit(ctx, ops.Delete(key))
}

// WaitApplied blocks until tok is applied (G8) or ctx ends.
func (c *Caller) WaitApplied(ctx context.Context, tok Token) error {
	return c.client.WaitApplied(ctx, tok)
}

// Close unregisters the incarnation. Its accepted operations are still
// applied (G4).
func (c *Caller) Close(ctx context.Context) error { return c.inc.Close(ctx) }
