package client

import (
	"context"
	"fmt"
	"sync"

	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// Session owns the registration of a name for a whole process and is shared
// by all of its goroutines. It submits under the current incarnation and,
// when the incarnation's lease is lost, registers the name again exactly
// once however many submissions fail at the same moment (G9): each failed
// submission compares the incarnation it was sent under (its cookie) with
// the session's current one, under the session's lock; if they differ, the
// name was already re-registered and the submission is resent at once,
// otherwise it starts the one re-registration. The session also watches its
// registration: as soon as it knows the incarnation is dead, new
// submissions wait for the re-registration and are not sent under the dead
// incarnation. A session superseded by another live process does not
// register again: that error is final.
//
// A Session is safe for concurrent use. Close it to release its lease.
type Session struct {
	c        *Client
	name     string
	cfg      SessionConfig
	hooks    sessionHooks
	events   *eventQueue
	receipts *receiptPruner // nil with NoReceipts

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the session's goroutines

	mu       sync.Mutex
	inc      *registry.Incarnation // the latest incarnation
	renewing *renewal              // non-nil while inc is dead and being replaced
	failed   error                 // the final error
	done     chan struct{}         // closed when failed is set

	stats sessionCounters
}

// NewSession registers name and returns a session that keeps it
// registered. See SessionConfig for the defaults; an invalid cfg returns an
// error matching ErrBadConfig.
func (c *Client) NewSession(ctx context.Context, name string, cfg SessionConfig) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inc, err := c.reg.Register(ctx, name, cfg.registerConfig(true))
	if err != nil {
		return nil, denied(name, err)
	}
	s := &Session{
		c: c, name: name, cfg: cfg,
		events: newEventQueue(cfg.OnEvent),
		inc:    inc,
		done:   make(chan struct{}),
	}
	if cfg.hooks != nil {
		s.hooks = *cfg.hooks
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stats.registrations.Add(1)
	s.events.emit(Event{Kind: EventRegistered, New: inc.Incarnation})
	s.mu.Lock()
	s.startWatch(inc)
	s.mu.Unlock()
	if cfg.OnEvent != nil {
		s.spawn(s.events.run)
	}
	if !cfg.NoReceipts {
		s.receipts = newReceiptPruner(c.sub, name)
		s.spawn(s.receipts.run)
	}
	return s, nil
}

// spawn runs f on a goroutine of the session; Close cancels its context
// and waits for it.
func (s *Session) spawn(f func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f(s.ctx)
	}()
}

// Name is the registration name.
func (s *Session) Name() string { return s.name }

// Incarnation is the current incarnation token: the cookie a submission
// starts with. While a re-registration is under way it is the dead one.
func (s *Session) Incarnation() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inc.Incarnation
}

// Done is closed when the session has ended for good: superseded, or
// closed. Err then says which.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session works, then its final error, wrapping
// ErrSessionSuperseded or ErrSessionClosed.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() SessionStats { return s.stats.snapshot() }

// Close ends the session: later calls fail with ErrSessionClosed, waiting
// calls return it, and the current incarnation's lease is revoked (its
// accepted operations are still applied, G4). Call it also after the
// session failed, to release the lease.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.failed == nil {
		s.failLocked(fmt.Errorf("%w: %q", ErrSessionClosed, s.name))
	}
	s.mu.Unlock()
	s.cancel()
	stopped := make(chan struct{})
	go func() { s.wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	inc := s.inc
	s.mu.Unlock()
	return inc.Close(ctx)
}

// failLocked ends the session with err. s.mu is held.
func (s *Session) failLocked(err error) {
	if s.failed != nil {
		return
	}
	s.failed = err
	close(s.done)
	s.events.emit(Event{Kind: EventFailed, Old: s.inc.Incarnation, Err: err})
}

// acquire returns the incarnation to send under, waiting while a
// re-registration is under way.
func (s *Session) acquire(ctx context.Context) (*registry.Incarnation, error) {
	waited := false
	for {
		s.mu.Lock()
		failed, r, inc := s.failed, s.renewing, s.inc
		s.mu.Unlock()
		if failed != nil {
			return nil, failed
		}
		if r == nil {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return inc, nil
		}
		if !waited {
			waited = true
			s.stats.waits.Add(1)
		}
		select {
		case <-r.done:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// startWatch starts watching incarnation inc and reports what the watch
// learns to the session. s.mu is held, or s is not shared yet.
func (s *Session) startWatch(inc *registry.Incarnation) {
	w := &leaseWatcher{etcd: s.c.etcd, key: s.c.layout.Reg(s.name), inc: inc}
	s.spawn(func(ctx context.Context) {
		v := w.run(ctx)
		switch {
		case v.lost != nil:
			s.lost(inc, v.lost)
		case v.by != 0:
			s.superseded(inc, v.by)
		}
	})
}

// lost starts the re-registration when inc is still the live current
// incarnation.
func (s *Session) lost(inc *registry.Incarnation, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil && s.renewing == nil && s.inc == inc {
		s.startRenewLocked(cause)
	}
}

// superseded fails the session when inc is still the live current
// incarnation: another process registered the name.
func (s *Session) superseded(inc *registry.Incarnation, by int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil && s.renewing == nil && s.inc == inc {
		s.failLocked(supersededError(s.name, inc.Incarnation, by))
	}
}
