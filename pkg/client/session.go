package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Errors of a Session, for errors.Is.
var (
	// ErrSessionSuperseded is the final error of a session whose name was
	// registered by another live process. Errors wrapping it also wrap
	// ErrSuperseded.
	ErrSessionSuperseded = errors.New("client: session superseded")
	// ErrSessionClosed is returned by a session's methods after Close.
	ErrSessionClosed = errors.New("client: session closed")
	// ErrOutcomeUnknown: a submission's reply was lost and whether it was
	// accepted cannot be told (yet). Errors wrapping it are
	// *UnknownOutcomeError.
	ErrOutcomeUnknown = tokenseq.ErrOutcomeUnknown
	// ErrNotAccepted: Session.Resolve found that a submission was not
	// accepted, and never will be.
	ErrNotAccepted = tokenseq.ErrNotAccepted
)

// Toggle is an on/off option whose zero value leaves the option at its
// documented default.
type Toggle uint8

const (
	// Default leaves the option at its default.
	Default Toggle = iota
	// Enabled turns the option on.
	Enabled
	// Disabled turns the option off.
	Disabled
)

func (t Toggle) or(def bool) bool {
	switch t {
	case Enabled:
		return true
	case Disabled:
		return false
	}
	return def
}

// SessionOptions configure NewSession.
type SessionOptions struct {
	// TTL is the lease TTL of every incarnation; zero means
	// registry.DefaultTTL.
	TTL time.Duration
	// Holder overrides the holder metadata; zero means the current process.
	Holder registry.Holder
	// IfAbsent makes the first registration fail with ErrNameHeld instead
	// of superseding a live incarnation. Re-registrations never supersede:
	// a live holder of the name then means the session was superseded.
	IfAbsent bool
	// WaitDrained (default Enabled) makes every registration, the first and
	// each re-registration, wait until every operation of the name's
	// earlier incarnations is applied (G7) before the session sends
	// anything under it. Applying needs a running coordinator leader: with
	// none, a re-registration waits until one runs.
	WaitDrained Toggle
	// Retry (default Enabled) resends a submission refused because its
	// incarnation expired, under the next incarnation. Disabled returns the
	// refusal instead; the session re-registers all the same. A submission
	// whose outcome is unknown is never resent without a lookup.
	Retry Toggle
	// Receipts (default Enabled) stores a receipt under the incarnation's
	// lease with every batch, so that a submission whose reply was lost
	// can be looked up even after its batch was applied and deleted. Cost:
	// one small key per submission, put in the same transaction as the
	// batch and deleted (batched, up to 100 per transaction) once the
	// reply arrived; receipts not yet deleted go with the lease. Disabled:
	// a lost reply can be settled only while the batch is still pending,
	// otherwise the submission fails with ErrOutcomeUnknown.
	Receipts Toggle
	// OnEvent, when set, is called with each Event, one at a time and in
	// order, on a goroutine of the session. It must not block for long.
	OnEvent func(Event)

	hooks *sessionHooks
}

// sessionHooks let tests step into a session.
type sessionHooks struct {
	// send replaces the submission transaction; submit runs the real one.
	send func(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error)
	// beforeRegister runs before each re-registration attempt.
	beforeRegister func(old int64)
}

// EventKind says what happened to a session.
type EventKind uint8

const (
	// EventRegistered: the first incarnation was registered (New).
	EventRegistered EventKind = iota + 1
	// EventLeaseLost: incarnation Old is known to be dead (Err says how);
	// from now on submissions wait for the re-registration.
	EventLeaseLost
	// EventRenewed: incarnation New replaced the dead incarnation Old.
	EventRenewed
	// EventFailed: the session ended for good with Err (superseded or
	// closed); Old is the last incarnation.
	EventFailed
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventRegistered:
		return "registered"
	case EventLeaseLost:
		return "lease-lost"
	case EventRenewed:
		return "renewed"
	case EventFailed:
		return "failed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a change of a session's incarnation.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// Old is the incarnation token that ended, zero for EventRegistered.
	Old int64
	// New is the incarnation token registered, zero unless EventRegistered
	// or EventRenewed.
	New int64
	// Err is why Old ended.
	Err error
	// Time is when the session learnt of it.
	Time time.Time
}

// SessionStats are a session's counters since NewSession.
type SessionStats struct {
	// Registrations counts incarnations registered, the first included.
	Registrations uint64
	// Renewals counts re-registrations after a lost lease.
	Renewals uint64
	// Accepted counts submissions that returned a token.
	Accepted uint64
	// Expired counts submissions refused because they were sent under a
	// dead incarnation (sent before the session knew it was dead), whether
	// etcd answered "expired" or "superseded" by the session's own
	// re-registration.
	Expired uint64
	// Retries counts resends of a submission after a refusal or after a
	// lookup proved it was not accepted.
	Retries uint64
	// Waits counts submissions that waited for a re-registration before
	// being sent.
	Waits uint64
	// Lookups counts lookups of submissions whose reply was lost.
	Lookups uint64
}

type sessionCounters struct {
	registrations, renewals, accepted, expired, retries, waits, lookups atomic.Uint64
}

// Session owns the registration of a name for a whole process and is shared
// by all of its goroutines. It submits under the current incarnation and,
// when the incarnation's lease is lost, registers the name again exactly
// once however many submissions fail at the same moment (G9): each failed
// submission compares the incarnation it was sent under (its cookie) with
// the session's current one, under the session's lock; if they differ, the
// name was already re-registered and the submission is resent at once,
// otherwise it starts the one re-registration. The session also watches its
// registration: as soon as it knows the incarnation is dead, new
// submissions wait for the re-registration instead of going out under the
// dead incarnation. A session superseded by another live process does not
// register again: that error is final.
//
// A Session is safe for concurrent use. Close it to release its lease.
type Session struct {
	c           *Client
	name        string
	ttl         time.Duration
	holder      registry.Holder
	waitDrained bool
	retry       bool
	receipts    bool
	onEvent     func(Event)
	hooks       sessionHooks

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	prune  chan receipt
	signal chan struct{} // wakes the event dispatcher

	mu       sync.Mutex
	inc      *registry.Incarnation // the latest incarnation
	renewing chan struct{}         // non-nil while inc is dead and being replaced
	failed   error                 // the final error
	done     chan struct{}         // closed when failed is set
	events   []Event               // not yet dispatched

	stats sessionCounters
}

type receipt struct {
	inc int64
	id  string
}

// NewSession registers name and returns a session that keeps it
// registered. See SessionOptions for the defaults.
func (c *Client) NewSession(ctx context.Context, name string, opts SessionOptions) (*Session, error) {
	s := &Session{
		c: c, name: name, ttl: opts.TTL, holder: opts.Holder,
		waitDrained: opts.WaitDrained.or(true),
		retry:       opts.Retry.or(true),
		receipts:    opts.Receipts.or(true),
		onEvent:     opts.OnEvent,
		prune:       make(chan receipt, 4096),
		signal:      make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if opts.hooks != nil {
		s.hooks = *opts.hooks
	}
	inc, err := c.reg.Register(ctx, name, registry.RegisterConfig{
		TTL: opts.TTL, Holder: opts.Holder, IfAbsent: opts.IfAbsent, WaitDrained: s.waitDrained,
	})
	if err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stats.registrations.Add(1)
	s.mu.Lock()
	s.inc = inc
	s.emitLocked(Event{Kind: EventRegistered, New: inc.Incarnation})
	s.watchLocked(inc)
	s.mu.Unlock()
	s.wg.Add(1)
	go s.dispatch()
	if s.receipts {
		s.wg.Add(1)
		go s.pruneReceipts()
	}
	return s, nil
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
func (s *Session) Stats() SessionStats {
	return SessionStats{
		Registrations: s.stats.registrations.Load(),
		Renewals:      s.stats.renewals.Load(),
		Accepted:      s.stats.accepted.Load(),
		Expired:       s.stats.expired.Load(),
		Retries:       s.stats.retries.Load(),
		Waits:         s.stats.waits.Load(),
		Lookups:       s.stats.lookups.Load(),
	}
}

// Set submits a set of key to value with the given expiration (zero: none).
func (s *Session) Set(ctx context.Context, key string, value []byte, expiration time.Duration) (Token, error) {
	return s.Submit(ctx, ops.Set(key, value, expiration))
}

// Delete submits a delete of key.
func (s *Session) Delete(ctx context.Context, key string) (Token, error) {
	return s.Submit(ctx, ops.Delete(key))
}

// WaitApplied blocks until tok is applied (G8) or ctx ends.
func (s *Session) WaitApplied(ctx context.Context, tok Token) error {
	return s.c.WaitApplied(ctx, tok)
}

// Submit submits ops as one batch under the current incarnation and returns
// its token. While a re-registration is under way it first waits for it,
// or returns ctx.Err() when ctx ends. A batch refused because the
// incarnation expired is resent under the next one (SessionOptions.Retry).
// It returns an error wrapping ErrSessionSuperseded once the name belongs
// to another process, ErrInvalid for bad input, and an
// *UnknownOutcomeError when the reply was lost and no lookup could settle
// whether the batch was accepted; such a batch is never resent blindly.
func (s *Session) Submit(ctx context.Context, batch ...ops.Op) (Token, error) {
	if err := ops.ValidateBatch(batch, s.c.sub.Limits()); err != nil {
		return tokenseq.Zero, err
	}
	id := tokenseq.NewBatchID()
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		inc, err := s.acquire(ctx)
		if err != nil {
			return tokenseq.Zero, err
		}
		req := tokenseq.Request{Name: s.name, Incarnation: inc.Incarnation, ID: id, Ops: batch}
		if s.receipts {
			req.Lease = inc.LeaseID
		}
		tok, err := s.send(ctx, req)
		var refused *tokenseq.RefusedError
		switch {
		case err == nil:
			return s.accepted(req, tok), nil
		case errors.Is(err, ops.ErrInvalid), errors.Is(err, keyspace.ErrInvalidName):
			return tokenseq.Zero, err
		case errors.As(err, &refused) && errors.Is(err, ErrExpired):
			s.stats.expired.Add(1)
			s.expired(req.Incarnation, err)
			if !s.retry {
				return tokenseq.Zero, err
			}
		case errors.As(err, &refused):
			if final := s.refusedSuperseded(req.Incarnation, refused); final != nil {
				return tokenseq.Zero, final
			}
			// Refused because this session's own newer incarnation had
			// already replaced the dead one it was sent under.
			s.stats.expired.Add(1)
			if !s.retry {
				return tokenseq.Zero, err
			}
		case errors.Is(err, tokenseq.ErrVoided):
			// A lookup settled this id as not accepted: send a new one.
			id = tokenseq.NewBatchID()
		default:
			// The reply was lost: the batch may have been accepted.
			tok, lerr := s.settle(ctx, req, err)
			if lerr == nil {
				return s.accepted(req, tok), nil
			}
			if !errors.Is(lerr, ErrNotAccepted) {
				return tokenseq.Zero, lerr
			}
			// Not accepted, and the lookup made sure it never will be.
			id = tokenseq.NewBatchID()
			if !retry.Sleep(ctx, backoff.Next()) {
				return tokenseq.Zero, ctx.Err()
			}
		}
		s.stats.retries.Add(1)
	}
}

// Resolve settles a submission that failed with an *UnknownOutcomeError:
// it returns the batch's token when it was accepted, an error wrapping
// ErrNotAccepted when it was not (and now never will be), and one wrapping
// ErrOutcomeUnknown when nothing left in etcd can tell.
func (s *Session) Resolve(ctx context.Context, u *UnknownOutcomeError) (Token, error) {
	s.stats.lookups.Add(1)
	return s.c.sub.Lookup(ctx, tokenseq.Request{Name: u.Name, Incarnation: u.Incarnation, ID: u.ID, Lease: u.lease})
}

// UnknownOutcomeError is the error of a submission whose reply was lost
// when a lookup could not settle whether its batch was accepted (etcd was
// unreachable until ctx ended, or the incarnation and its receipts are
// gone). It wraps ErrOutcomeUnknown and the error that lost the reply.
type UnknownOutcomeError struct {
	// Name, Incarnation and ID identify the batch.
	Name        string
	Incarnation int64
	ID          string
	// Err is the error that left the outcome unknown.
	Err   error
	lease clientv3.LeaseID
}

// Error describes the batch and the cause.
func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("client: outcome of batch %s of %q incarnation %d unknown: %v", e.ID, e.Name, e.Incarnation, e.Err)
}

// Unwrap returns ErrOutcomeUnknown and the cause.
func (e *UnknownOutcomeError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

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

// action is what a submission refused under its cookie does next.
type action uint8

const (
	// actRetry: a newer incarnation is current; resend under it at once.
	actRetry action = iota + 1
	// actWait: a re-registration is under way; wait for it.
	actWait
	// actRenew: the cookie is the current incarnation and it is dead;
	// re-register.
	actRenew
	// actFail: the session has ended; return its error.
	actFail
)

// compareCookie is the cookie check of G9. A submission refused as expired
// under incarnation cookie asks what to do, given the session's current
// incarnation, whether a re-registration of it is under way and whether the
// session has failed. Only a cookie equal to the current incarnation, with
// no re-registration under way, may re-register: a submission arriving with
// an older cookie retries under the newer incarnation instead of
// re-registering over it.
func compareCookie(cookie, current int64, renewing, failed bool) action {
	switch {
	case failed:
		return actFail
	case renewing:
		return actWait
	case cookie != current:
		return actRetry
	}
	return actRenew
}

// expired handles a submission refused as expired under cookie: under the
// session's lock it compares the cookie with the current incarnation and
// starts the one re-registration when they match. It returns what the
// compare decided (actRenew when this call started the re-registration).
func (s *Session) expired(cookie int64, cause error) action {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := compareCookie(cookie, s.inc.Incarnation, s.renewing != nil, s.failed != nil)
	if a == actRenew {
		s.startRenewLocked(cause)
	}
	return a
}

// refusedSuperseded handles a submission refused as superseded under
// cookie. A newer incarnation of this session (a stale cookie, or a
// re-registration under way) means resend; otherwise another process holds
// the name and the session fails. It returns the final error, or nil to
// resend.
func (s *Session) refusedSuperseded(cookie int64, refused *tokenseq.RefusedError) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch compareCookie(cookie, s.inc.Incarnation, s.renewing != nil, s.failed != nil) {
	case actFail:
		return s.failed
	case actRetry, actWait:
		return nil
	}
	s.failLocked(supersededError(s.name, cookie, refused.Current))
	return s.failed
}

func supersededError(name string, inc, by int64) error {
	if by == 0 {
		return fmt.Errorf("%w: %q incarnation %d: the name is held by another process: %w", ErrSessionSuperseded, name, inc, ErrSuperseded)
	}
	return fmt.Errorf("%w: %q incarnation %d replaced by incarnation %d of another process: %w", ErrSessionSuperseded, name, inc, by, ErrSuperseded)
}

// acquire returns the incarnation to send under, waiting while a
// re-registration is under way.
func (s *Session) acquire(ctx context.Context) (*registry.Incarnation, error) {
	waited := false
	for {
		s.mu.Lock()
		failed, ch, inc := s.failed, s.renewing, s.inc
		s.mu.Unlock()
		if failed != nil {
			return nil, failed
		}
		if ch == nil {
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
		case <-ch:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Session) send(ctx context.Context, req tokenseq.Request) (Token, error) {
	submit := func() (Token, error) { return s.c.sub.SubmitRequest(ctx, req) }
	if s.hooks.send != nil {
		return s.hooks.send(ctx, req, submit)
	}
	return submit()
}

func (s *Session) accepted(req tokenseq.Request, tok Token) Token {
	s.stats.accepted.Add(1)
	if req.Lease != 0 {
		select {
		case s.prune <- receipt{inc: req.Incarnation, id: req.ID}:
		default: // the receipt goes with the lease
		}
	}
	return tok
}

// settle looks up a submission whose reply was lost. It retries lookups
// that fail to reach etcd until ctx ends.
func (s *Session) settle(ctx context.Context, req tokenseq.Request, cause error) (Token, error) {
	unknown := func(err error) error {
		return &UnknownOutcomeError{Name: req.Name, Incarnation: req.Incarnation, ID: req.ID, Err: err, lease: req.Lease}
	}
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		if err := ctx.Err(); err != nil {
			return tokenseq.Zero, unknown(fmt.Errorf("%w (submission: %w)", err, cause))
		}
		s.stats.lookups.Add(1)
		tok, err := s.c.sub.Lookup(ctx, req)
		switch {
		case err == nil, errors.Is(err, ErrNotAccepted):
			return tok, err
		case errors.Is(err, ErrOutcomeUnknown):
			return tokenseq.Zero, unknown(fmt.Errorf("%w (submission: %w)", err, cause))
		}
		if !retry.Sleep(ctx, backoff.Next()) {
			return tokenseq.Zero, unknown(fmt.Errorf("%w (submission: %w; lookup: %w)", ctx.Err(), cause, err))
		}
	}
}

// startRenewLocked marks the current incarnation dead and starts the one
// re-registration. s.mu is held.
func (s *Session) startRenewLocked(cause error) {
	ch := make(chan struct{})
	s.renewing = ch
	s.emitLocked(Event{Kind: EventLeaseLost, Old: s.inc.Incarnation, Err: cause})
	s.wg.Add(1)
	go s.renew(s.inc, ch)
}

// failLocked ends the session with err. s.mu is held.
func (s *Session) failLocked(err error) {
	if s.failed != nil {
		return
	}
	s.failed = err
	close(s.done)
	s.emitLocked(Event{Kind: EventFailed, Old: s.inc.Incarnation, Err: err})
}

// renew replaces the dead incarnation old and then closes ch. It never
// supersedes anyone: the registration is made only if the name is free.
func (s *Session) renew(old *registry.Incarnation, ch chan struct{}) {
	defer s.wg.Done()
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: 2 * time.Second}
	for {
		// Make sure the old registration is gone: after a keep-alive
		// failure the lease may outlive it briefly, and it would make the
		// name look held. A lease that is already gone needs nothing.
		rctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		if ttl, err := s.c.etcd.TimeToLive(rctx, old.LeaseID); err != nil || ttl.TTL > 0 {
			_ = old.Close(rctx)
		}
		cancel()
		if s.hooks.beforeRegister != nil {
			s.hooks.beforeRegister(old.Incarnation)
		}
		inc, err := s.c.reg.Register(s.ctx, s.name, registry.RegisterConfig{
			TTL: s.ttl, Holder: s.holder, IfAbsent: true, WaitDrained: s.waitDrained,
		})
		if err == nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.failed != nil { // closed meanwhile
				cctx, cancel := context.WithTimeout(context.Background(), registry.CleanupTimeout)
				defer cancel()
				_ = inc.Close(cctx)
				return
			}
			s.stats.registrations.Add(1)
			s.stats.renewals.Add(1)
			s.inc = inc
			s.renewing = nil
			close(ch)
			s.emitLocked(Event{Kind: EventRenewed, Old: old.Incarnation, New: inc.Incarnation})
			s.watchLocked(inc)
			return
		}
		if s.ctx.Err() != nil {
			return // Close has failed the session
		}
		if errors.Is(err, registry.ErrNameHeld) {
			reg, ok, gerr := s.c.reg.Get(s.ctx, s.name)
			if gerr == nil && ok && reg.Incarnation != old.Incarnation {
				s.mu.Lock()
				s.failLocked(supersededError(s.name, old.Incarnation, reg.Incarnation))
				s.mu.Unlock()
				return
			}
			// Our own old registration still, or gone by now: try again.
		}
		if !retry.Sleep(s.ctx, backoff.Next()) {
			return
		}
	}
}

// errRegDeleted is the cause of a lease loss seen as the deletion of the
// registration.
var errRegDeleted = fmt.Errorf("%w: registration deleted", registry.ErrLeaseLost)

// watchLocked starts watching incarnation inc. s.mu is held.
func (s *Session) watchLocked(inc *registry.Incarnation) {
	s.wg.Add(1)
	go s.watch(inc)
}

// watch follows the registration key of inc until it learns that inc is
// dead (deleted: the lease ended; or the keep-alive stopped) or superseded
// (put by someone else), and tells the session.
func (s *Session) watch(inc *registry.Incarnation) {
	defer s.wg.Done()
	key := s.c.layout.Reg(s.name)
	rev := inc.Incarnation + 1
	backoff := retry.Backoff{Min: 20 * time.Millisecond, Max: 2 * time.Second}
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
		wch := s.c.etcd.Watch(wctx, key, clientv3.WithRev(rev))
		ended := false
		for !ended {
			select {
			case <-s.ctx.Done():
				cancel()
				return
			case <-inc.Done():
				cancel()
				s.lost(inc, inc.Err())
				return
			case wr, ok := <-wch:
				if !ok || wr.Err() != nil {
					ended = true
					break
				}
				for _, ev := range wr.Events {
					cancel()
					if ev.Type == clientv3.EventTypeDelete {
						s.lost(inc, errRegDeleted)
					} else if ev.Kv.ModRevision != inc.Incarnation {
						s.superseded(inc, ev.Kv.ModRevision)
					}
					return
				}
			}
		}
		cancel()
		// The watch broke (compaction, no etcd leader): read the key and
		// watch again from there.
		if !retry.Sleep(s.ctx, backoff.Next()) {
			return
		}
		resp, err := s.c.etcd.Get(s.ctx, key)
		if err != nil {
			continue
		}
		switch {
		case len(resp.Kvs) == 0:
			s.lost(inc, errRegDeleted)
			return
		case resp.Kvs[0].ModRevision != inc.Incarnation:
			s.superseded(inc, resp.Kvs[0].ModRevision)
			return
		}
		rev = resp.Header.Revision + 1
		backoff.Reset()
	}
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

// emitLocked queues an event for OnEvent. s.mu is held.
func (s *Session) emitLocked(ev Event) {
	if s.onEvent == nil {
		return
	}
	ev.Time = time.Now()
	s.events = append(s.events, ev)
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// dispatch calls OnEvent in order until the session is closed, then
// delivers what is left.
func (s *Session) dispatch() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		evs := s.events
		s.events = nil
		s.mu.Unlock()
		for _, ev := range evs {
			s.onEvent(ev)
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-s.signal:
		case <-s.ctx.Done():
			s.mu.Lock()
			evs := s.events
			s.events = nil
			s.mu.Unlock()
			for _, ev := range evs {
				s.onEvent(ev)
			}
			return
		}
	}
}

// pruneReceipts deletes the receipts of submissions whose reply arrived,
// many per transaction. A receipt it fails to delete goes with the lease.
func (s *Session) pruneReceipts() {
	defer s.wg.Done()
	for {
		var first receipt
		select {
		case <-s.ctx.Done():
			return
		case first = <-s.prune:
		}
		byInc := map[int64][]string{first.inc: {first.id}}
		n := 1
	more:
		for n < 100 {
			select {
			case r := <-s.prune:
				byInc[r.inc] = append(byInc[r.inc], r.id)
				n++
			default:
				break more
			}
		}
		for inc, ids := range byInc {
			_ = s.c.sub.DeleteReceipts(s.ctx, s.name, inc, ids)
		}
	}
}
