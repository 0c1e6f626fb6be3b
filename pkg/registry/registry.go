// Package registry registers callers under leases. A registration is a key
// under the caller's lease, so a dead caller's registration disappears on
// its own. Each registration of a name is an incarnation; its token is the
// etcd revision at which it was written. Registering a name that is held
// supersedes the earlier incarnation, which is what a restart does.
//
// The registry also offers the drain barrier (G7): waiting until every
// batch of a name's earlier incarnations has been applied.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcderr"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// DefaultTTL is the lease TTL used when RegisterConfig.TTL is zero.
const DefaultTTL = 10 * time.Second

// MaxTTL bounds a registration's lease TTL: a caller that dies holds its
// name, and keeps its registration in etcd, for at most this long.
const MaxTTL = 24 * time.Hour

// TTLSeconds is the one TTL rule of every registration, whichever path
// makes it: zero means DefaultTTL; any other TTL must be at least 1s and at
// most MaxTTL, and is rounded up to whole seconds, etcd's lease unit. A TTL
// outside that range is an error matching ErrBadTTL.
func TTLSeconds(ttl time.Duration) (int64, error) {
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < time.Second:
		return 0, fmt.Errorf("%w: %v is under 1s", ErrBadTTL, ttl)
	case ttl > MaxTTL:
		return 0, fmt.Errorf("%w: %v is over %v", ErrBadTTL, ttl, MaxTTL)
	}
	return int64((ttl + time.Second - 1) / time.Second), nil
}

// CleanupTimeout bounds the revoke of a lease that a failed or abandoned
// registration leaves behind; it runs even when the caller's context has
// ended, so that the name is freed at once rather than when the lease
// expires.
const CleanupTimeout = 5 * time.Second

// Errors returned by the registry.
var (
	// ErrNameHeld is returned by Register with IfAbsent when a live
	// incarnation holds the name.
	ErrNameHeld = errors.New("registry: name is held by a live incarnation")
	// ErrBadTTL is matched by the *config.FieldError of a TTL under one
	// second or over MaxTTL.
	ErrBadTTL = errors.New("registry: lease TTL must be within 1s..24h")
	// ErrLeaseLost is reported by Incarnation.Err when the lease expired or
	// was revoked by someone else.
	ErrLeaseLost = errors.New("registry: lease lost")
	// ErrClosed is reported by Incarnation.Err after Close.
	ErrClosed = errors.New("registry: incarnation closed")
)

// Holder describes the process that holds a registration.
type Holder struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// CurrentProcess describes this process.
func CurrentProcess() Holder {
	host, _ := os.Hostname()
	return Holder{Host: host, PID: os.Getpid(), Started: processStart}
}

var processStart = time.Now().UTC().Truncate(time.Millisecond)

type record struct {
	Holder
	TTLSeconds int64 `json:"ttl_seconds"`
}

// Registration is a registration as stored in etcd.
type Registration struct {
	// Name is the registration name.
	Name string
	// Incarnation is the registration key's ModRevision: it changes with
	// every registration of the name, and only grows.
	Incarnation int64
	// Holder is who registered, as the record says.
	Holder Holder
	// LeaseID is the lease the registration lives under.
	LeaseID clientv3.LeaseID
	// TTL is the lease's time to live as the record states it (the TTL the
	// registration asked for), not the lease's remaining time.
	TTL time.Duration
	// Superseded is the live incarnation this registration replaced (a
	// takeover), zero when the name was free. Only set by Register and
	// RegisterLease.
	Superseded int64
}

// MaxHolderHost bounds Holder.Host, so that a registration record has a
// stated maximum size: with a name of keyspace.MaxNameLen bytes, a record
// is under 512 bytes.
const MaxHolderHost = 255

// ErrBadHolder is returned for a Holder whose Host is over MaxHolderHost
// bytes or not valid UTF-8; nothing is written.
var ErrBadHolder = errors.New("registry: holder host must be valid UTF-8 of at most 255 bytes")

// RegisterConfig configures Register. Zero values mean the defaults noted.
type RegisterConfig struct {
	// TTL is the lease TTL, at least 1s; zero means DefaultTTL. etcd may
	// round it up to its minimum lease TTL.
	TTL time.Duration
	// IfAbsent refuses with ErrNameHeld, rather than superseding a live
	// incarnation.
	IfAbsent bool
	// WaitDrained blocks Register, after registering, until every batch of
	// the name's earlier incarnations has been applied (G7).
	WaitDrained bool
	// Holder overrides the holder metadata; zero means CurrentProcess().
	Holder Holder
}

// Validate checks the config; its errors are *config.FieldError. A TTL
// outside TTLSeconds' rule also matches ErrBadTTL.
func (c *RegisterConfig) Validate() error {
	return ValidateTTL("registry", c.TTL)
}

// ValidateTTL checks the TTL field of pkg's config against TTLSeconds'
// rule; its error is a *config.FieldError matching ErrBadTTL.
func ValidateTTL(pkg string, ttl time.Duration) error {
	if _, err := TTLSeconds(ttl); err != nil {
		rule := ttl.String() + " is under 1s"
		if ttl > MaxTTL {
			rule = ttl.String() + " is over " + MaxTTL.String()
		}
		return &config.FieldError{Pkg: pkg, Field: "TTL", Rule: rule, Err: ErrBadTTL}
	}
	return nil
}

// withDefaults fills in the defaults of unset fields.
func (c RegisterConfig) withDefaults() RegisterConfig {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Holder == (Holder{}) {
		c.Holder = CurrentProcess()
	}
	return c
}

// Registry registers callers in one namespace.
type Registry struct {
	cli    *clientv3.Client
	layout keyspace.Layout
}

// New returns a Registry for the namespace of layout.
func New(cli *clientv3.Client, layout keyspace.Layout) *Registry {
	return &Registry{cli: cli, layout: layout}
}

// Register registers name under a new lease with keep-alive running, and
// returns the new incarnation. Unless cfg.IfAbsent is set, a live
// incarnation of the name is superseded. An invalid cfg returns a
// *config.FieldError.
func (r *Registry) Register(ctx context.Context, name string, cfg RegisterConfig) (*Incarnation, error) {
	reg, err := r.write(ctx, name, cfg)
	if err != nil {
		return nil, err
	}
	inc := newIncarnation(r, reg)
	if cfg.WaitDrained {
		if err := r.WaitDrained(ctx, name, reg.Incarnation); err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
			defer cancel()
			_ = inc.Close(cctx)
			return nil, err
		}
	}
	return inc, nil
}

// RegisterLease registers name as Register does, but leaves the lease to
// the caller: nothing in this process keeps it alive once RegisterLease has
// returned. It is the registration of a caller that keeps its lease alive
// itself, through a node's API. With cfg.WaitDrained, the lease is kept
// alive while RegisterLease waits, since its holder has not been told of
// it yet. On an error, the lease is revoked.
func (r *Registry) RegisterLease(ctx context.Context, name string, cfg RegisterConfig) (Registration, error) {
	reg, err := r.write(ctx, name, cfg)
	if err != nil || !cfg.WaitDrained {
		return reg, err
	}
	if err := r.waitDrainedKeepingAlive(ctx, reg); err != nil {
		r.revoke(ctx, reg.LeaseID)
		return Registration{}, err
	}
	return reg, nil
}

// write grants a lease and writes name's registration under it, revoking
// the lease when the write fails.
func (r *Registry) write(ctx context.Context, name string, cfg RegisterConfig) (Registration, error) {
	if err := keyspace.ValidateName(name); err != nil {
		return Registration{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Registration{}, err
	}
	cfg = cfg.withDefaults()
	if len(cfg.Holder.Host) > MaxHolderHost || !utf8.ValidString(cfg.Holder.Host) {
		return Registration{}, fmt.Errorf("%w: %d bytes", ErrBadHolder, len(cfg.Holder.Host))
	}
	ttlSec, err := TTLSeconds(cfg.TTL)
	if err != nil {
		return Registration{}, err
	}
	val, err := json.Marshal(record{Holder: cfg.Holder, TTLSeconds: ttlSec})
	if err != nil {
		return Registration{}, err
	}
	grant, err := r.cli.Grant(ctx, ttlSec)
	if err != nil {
		return Registration{}, fmt.Errorf("registry: grant lease: %w", err)
	}
	put := clientv3.OpPut(r.layout.Reg(name), string(val), clientv3.WithLease(grant.ID), clientv3.WithPrevKV())
	var rev, prev int64
	if cfg.IfAbsent {
		rev, err = r.putIfAbsent(ctx, name, put)
	} else {
		rev, prev, err = r.putAlways(ctx, name, put)
	}
	if err != nil {
		r.revoke(ctx, grant.ID)
		return Registration{}, err
	}
	return Registration{
		Name: name, Incarnation: rev, Holder: cfg.Holder, LeaseID: grant.ID, TTL: time.Duration(grant.TTL) * time.Second,
		Superseded: prev,
	}, nil
}

// revoke revokes lease within CleanupTimeout, also when ctx has ended, so
// that a failed registration frees the name at once.
func (r *Registry) revoke(ctx context.Context, lease clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
	defer cancel()
	_, _ = r.cli.Revoke(rctx, lease)
}

// waitDrainedKeepingAlive waits for reg's drain barrier while keeping its
// lease alive.
func (r *Registry) waitDrainedKeepingAlive(ctx context.Context, reg Registration) error {
	kctx, cancel := context.WithCancel(ctx)
	ka, err := r.cli.KeepAlive(kctx, reg.LeaseID)
	if err != nil {
		cancel()
		return fmt.Errorf("registry: keep alive %q: %w", reg.Name, err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range ka {
		}
	}()
	err = r.WaitDrained(ctx, reg.Name, reg.Incarnation)
	cancel()
	<-drained
	return err
}

// putAlways writes name's registration, superseding a live incarnation, and
// returns its revision and the incarnation it superseded (zero: none).
func (r *Registry) putAlways(ctx context.Context, name string, put clientv3.Op) (rev, prev int64, err error) {
	resp, err := r.cli.Do(ctx, put)
	if err != nil {
		return 0, 0, fmt.Errorf("registry: register %q: %w", name, err)
	}
	if kv := resp.Put().PrevKv; kv != nil {
		prev = kv.ModRevision
	}
	return resp.Put().Header.Revision, prev, nil
}

// putIfAbsent writes name's registration unless one exists, and returns its
// revision; an existing one is ErrNameHeld, naming its holder.
func (r *Registry) putIfAbsent(ctx context.Context, name string, put clientv3.Op) (int64, error) {
	key := r.layout.Reg(name)
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(put).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("registry: register %q: %w", name, err)
	}
	if !resp.Succeeded {
		held := "a live process"
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if reg, err := r.decode(kvs[0].Key, kvs[0].Value, kvs[0].ModRevision, kvs[0].Lease); err == nil {
				held = fmt.Sprintf("pid %d on %s (incarnation %d)", reg.Holder.PID, reg.Holder.Host, reg.Incarnation)
			}
		}
		return 0, fmt.Errorf("%w: %q is held by %s", ErrNameHeld, name, held)
	}
	return resp.Header.Revision, nil
}

// Get returns the current registration of name, or false when none is.
func (r *Registry) Get(ctx context.Context, name string) (Registration, bool, error) {
	if err := keyspace.ValidateName(name); err != nil {
		return Registration{}, false, err
	}
	resp, err := r.cli.Get(ctx, r.layout.Reg(name))
	if err != nil {
		return Registration{}, false, fmt.Errorf("registry: get %q: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return Registration{}, false, nil
	}
	kv := resp.Kvs[0]
	reg, err := r.decode(kv.Key, kv.Value, kv.ModRevision, kv.Lease)
	return reg, err == nil, err
}

// List returns every current registration, sorted by name. Records that
// cannot be decoded are returned in bad, not as an error.
func (r *Registry) List(ctx context.Context) (regs []Registration, bad []string, err error) {
	prefix := r.layout.RegPrefix()
	resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("registry: list: %w", err)
	}
	for _, kv := range resp.Kvs {
		reg, err := r.decode(kv.Key, kv.Value, kv.ModRevision, kv.Lease)
		if err != nil {
			bad = append(bad, string(kv.Key))
			continue
		}
		regs = append(regs, reg)
	}
	return regs, bad, nil
}

func (r *Registry) decode(key, value []byte, modRev, lease int64) (Registration, error) {
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil {
		return Registration{}, fmt.Errorf("registry: record %q: %w", key, err)
	}
	return Registration{
		Name:        r.layout.NameFromReg(string(key)),
		Incarnation: modRev,
		Holder:      rec.Holder,
		LeaseID:     clientv3.LeaseID(lease),
		TTL:         time.Duration(rec.TTLSeconds) * time.Second,
	}, nil
}

// PendingBefore counts the pending batches of name's incarnations older than
// inc. It returns the count and the etcd revision it was read at.
func (r *Registry) PendingBefore(ctx context.Context, name string, inc int64) (int64, int64, error) {
	resp, err := r.cli.Get(ctx, r.layout.NameOpsPrefix(name),
		clientv3.WithRange(r.layout.IncarnationOpsPrefix(name, inc)), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, fmt.Errorf("registry: count pending of %q: %w", name, err)
	}
	return resp.Count, resp.Header.Revision, nil
}

// WaitDrained blocks until no batch of an incarnation of name older than inc
// is pending (G7), or ctx ends.
func (r *Registry) WaitDrained(ctx context.Context, name string, inc int64) error {
	for {
		n, rev, err := r.PendingBefore(ctx, name, inc)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := r.waitDelete(ctx, name, rev); err != nil && ctx.Err() != nil {
			return fmt.Errorf("registry: waiting for %q to drain: %w", name, ctx.Err())
		}
	}
}

// waitDelete returns after the first deletion under name's batches after
// rev, or when the watch ends.
func (r *Registry) waitDelete(ctx context.Context, name string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range r.cli.Watch(wctx, r.layout.NameOpsPrefix(name), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	return ctx.Err()
}

// Incarnation is a live registration held by this process. Its lease is kept
// alive until Close or until the lease is lost.
type Incarnation struct {
	Registration

	reg    *Registry
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error
}

func newIncarnation(r *Registry, reg Registration) *Incarnation {
	ctx, cancel := context.WithCancel(context.Background())
	inc := &Incarnation{Registration: reg, reg: r, cancel: cancel, done: make(chan struct{})}
	ka, err := r.cli.KeepAlive(ctx, reg.LeaseID)
	if err != nil {
		inc.finish(fmt.Errorf("%w: %w", ErrLeaseLost, err))
		return inc
	}
	go func() {
		for range ka {
		}
		inc.finish(ErrLeaseLost)
	}()
	return inc
}

func (i *Incarnation) finish(err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.err != nil {
		return
	}
	i.err = err
	close(i.done)
}

// Done is closed when the incarnation ends: its lease was lost (expired or
// revoked elsewhere) or Close was called.
func (i *Incarnation) Done() <-chan struct{} { return i.done }

// Err returns nil while the incarnation is live, then ErrLeaseLost or
// ErrClosed.
func (i *Incarnation) Err() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.err
}

// Close unregisters: it stops the keep-alive and revokes the lease, which
// deletes the registration if it is still this incarnation's. Pending
// batches of the incarnation are still applied (G4).
func (i *Incarnation) Close(ctx context.Context) error {
	i.finish(ErrClosed)
	i.cancel()
	_, err := i.reg.cli.Revoke(ctx, i.LeaseID)
	if err != nil && !etcderr.IsLeaseNotFound(err) {
		return fmt.Errorf("registry: revoke lease of %q: %w", i.Name, err)
	}
	return nil
}
