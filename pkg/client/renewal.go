package client

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// renewal is the one re-registration of a name whose incarnation old is
// dead (G9). It never supersedes anyone: the registration is made only if
// the name is free.
type renewal struct {
	etcd   *clientv3.Client
	reg    *registry.Registry
	name   string
	cfg    registry.RegisterConfig // IfAbsent is set
	old    *registry.Incarnation
	before func(old int64) // runs before each attempt; may be nil
	// done is closed once the new incarnation is current; submissions
	// waiting for the renewal wait on it.
	done chan struct{}
}

// run registers the name again, retrying until it succeeds, another
// process turns out to hold the name, or ctx ends. It returns the new
// incarnation, or the incarnation of the other process (by), or neither
// when ctx ended.
func (r *renewal) run(ctx context.Context) (inc *registry.Incarnation, by int64) {
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: 2 * time.Second}
	for {
		r.releaseOld(ctx)
		if r.before != nil {
			r.before(r.old.Incarnation)
		}
		inc, err := r.reg.Register(ctx, r.name, r.cfg)
		if err == nil {
			return inc, 0
		}
		if ctx.Err() != nil {
			return nil, 0
		}
		if errors.Is(err, registry.ErrNameHeld) {
			if by := r.heldBy(ctx); by != 0 {
				return nil, by
			}
			// Held by our own old registration, or free again: retry.
		}
		if !retry.Sleep(ctx, backoff.Next()) {
			return nil, 0
		}
	}
}

// releaseOld makes sure the old registration is gone: after a keep-alive
// failure the lease may outlive it briefly, and it would make the name look
// held. A lease that is already gone needs nothing.
func (r *renewal) releaseOld(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, registry.CleanupTimeout)
	defer cancel()
	if ttl, err := r.etcd.TimeToLive(rctx, r.old.LeaseID); err != nil || ttl.TTL > 0 {
		_ = r.old.Close(rctx)
	}
}

// heldBy returns the incarnation of another process that holds the name,
// or zero when the holder is the old incarnation or cannot be read.
func (r *renewal) heldBy(ctx context.Context) int64 {
	reg, ok, err := r.reg.Get(ctx, r.name)
	if err != nil || !ok || reg.Incarnation == r.old.Incarnation {
		return 0
	}
	return reg.Incarnation
}

// startRenewLocked marks the current incarnation dead and starts the one
// re-registration. s.mu is held.
func (s *Session) startRenewLocked(cause error) {
	r := &renewal{
		etcd: s.c.etcd, reg: s.c.reg, name: s.name, cfg: s.cfg.registerConfig(false),
		old: s.inc, before: s.hooks.beforeRegister, done: make(chan struct{}),
	}
	s.renewing = r
	s.events.emit(Event{Kind: EventLeaseLost, Old: s.inc.Incarnation, Err: cause})
	s.spawn(func(ctx context.Context) { s.renew(ctx, r) })
}

// renew runs r and makes its outcome the session's: the new incarnation
// becomes current, or the session fails superseded. A renewal that ends
// with ctx (Close) changes nothing: Close has failed the session.
func (s *Session) renew(ctx context.Context, r *renewal) {
	inc, by := r.run(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case inc != nil && s.failed != nil: // closed meanwhile
		cctx, cancel := context.WithTimeout(context.Background(), registry.CleanupTimeout)
		defer cancel()
		_ = inc.Close(cctx)
	case inc != nil:
		s.stats.registrations.Add(1)
		s.stats.renewals.Add(1)
		s.inc = inc
		s.renewing = nil
		close(r.done)
		s.events.emit(Event{Kind: EventRenewed, Old: r.old.Incarnation, New: inc.Incarnation})
		s.startWatch(inc)
	case by != 0:
		s.failLocked(supersededError(s.name, r.old.Incarnation, by))
	}
}
