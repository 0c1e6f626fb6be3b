// Package regwatch tells a node's many holders of an incarnation when its
// registration changes, over one etcd watch of every registration.
//
// A node serves thousands of idle KeepAlive streams, each of which must end
// as soon as its caller's registration is superseded or deleted. A watch per
// stream costs a goroutine of the etcd client and a few KiB each; a Watcher
// keeps one watch of the registration prefix and dispatches its events to
// per-name subscriptions, each a map entry and a channel of one slot.
//
// # Subscribe, then read
//
// Subscribe returns once the revision the Watcher watches from is fixed:
// every event after it reaches the subscriptions registered when it is
// dispatched. Registering and dispatching are serialized, so an event
// dispatched before a subscription was registered was committed before the
// subscriber's next read. A subscriber that subscribes and then reads the
// registration (a linearizable Get) therefore misses nothing: what was
// committed before its read, the read shows; what is committed after, the
// subscription is told.
package regwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// ErrClosed is returned by Subscribe once the Watcher is closed.
var ErrClosed = errors.New("regwatch: watcher closed")

// errWatchClosed is a watch whose channel closed without an error, which
// the etcd client does when the watch's stream ends.
var errWatchClosed = errors.New("regwatch: watch closed")

// errCompacted is a watch that cannot start where the Watcher left off,
// because etcd compacted the revisions it would replay.
var errCompacted = errors.New("regwatch: revisions to replay were compacted")

// Config configures a Watcher. Zero values mean the defaults noted.
type Config struct {
	// Etcd is the etcd client the watch and reads go through.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout; its registrations are watched.
	// It is required: a zero Layout names no namespace.
	Layout keyspace.Layout
	// Logger receives the watch's failures and restarts; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("regwatch", "Etcd", "is nil")
	case c.Etcd.Ctx() == nil:
		return config.Errorf("regwatch", "Etcd", "has no context: make it with clientv3.New")
	case c.Layout.Prefix() == "":
		return config.Errorf("regwatch", "Layout", "is empty")
	}
	return nil
}

// Signal is what a subscription is told.
type Signal uint8

const (
	// Changed is an event on the registration at a revision above the
	// subscription's incarnation: another incarnation registered the name,
	// or the registration was deleted (its lease expired or was revoked).
	// The incarnation is over; the subscription is told nothing more.
	Changed Signal = iota + 1
	// Recheck says the Watcher may have missed changes: its watch broke and
	// could not be resumed where it stopped, because etcd had compacted the
	// revisions in between. The subscriber must read the registration again
	// (the watch is running again by then, so Subscribe's guarantee holds
	// for that read).
	Recheck
)

// String names the signal.
func (s Signal) String() string {
	switch s {
	case Changed:
		return "changed"
	case Recheck:
		return "recheck"
	}
	return fmt.Sprintf("Signal(%d)", uint8(s))
}

// Backoff bounds of the watch's restarts.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Watcher watches a namespace's registrations for its subscriptions. It
// starts watching at its first Subscribe, so a node that serves no stream
// costs nothing, and keeps watching until Close, even with no subscription
// left: one watch per node is cheap, and the next subscriber need not wait
// for a new one. It runs one goroutine of its own; the etcd client adds
// those of one watch.
type Watcher struct {
	cli    *clientv3.Client
	layout keyspace.Layout
	log    *slog.Logger

	ctx  context.Context // ends at Close
	stop context.CancelFunc
	wg   sync.WaitGroup

	// ready is closed once the first watch's start revision is fixed.
	ready chan struct{}

	// mu serializes registering subscriptions with dispatching events;
	// see the package documentation for why that is enough.
	mu      sync.Mutex
	subs    map[string][]*sub
	started bool
	closed  bool
	// stopWatch ends the current watch as a failure would; only tests
	// call it (export_test.go), to make the Watcher resume.
	stopWatch context.CancelFunc
}

// sub is one subscription: Subscribe's, with a channel, or
// SubscribeFunc's, with a func.
type sub struct {
	inc   int64
	ch    chan Signal
	f     func(Signal)
	ended bool // Changed was sent; nothing more is
}

// signal tells s sig: Changed replaces a pending Recheck, a Recheck is
// dropped while one is pending.
func (s *sub) signal(sig Signal) {
	if s.f != nil {
		s.f(sig)
		return
	}
	if sig == Changed {
		select { // a pending Recheck gives way: Changed says more
		case <-s.ch:
		default:
		}
	}
	select { // the slot is free for a Changed: only the Watcher sends, under mu
	case s.ch <- sig:
	default:
	}
}

// New returns a Watcher of cfg.Layout's registrations. It does not touch
// etcd: the watch starts with the first Subscribe.
func New(cfg Config) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Closing the client ends the watch too: there is nothing left to
	// watch through, and retrying would only log.
	ctx, stop := context.WithCancel(cfg.Etcd.Ctx())
	return &Watcher{
		cli: cfg.Etcd, layout: cfg.Layout, log: cfg.Logger,
		ctx: ctx, stop: stop,
		ready: make(chan struct{}),
		subs:  make(map[string][]*sub),
	}, nil
}

// Subscribe reports changes of name's registration after incarnation inc
// (the registration's ModRevision when it was put): the first event on it
// at a revision above inc sends Changed, and events at or below inc, such
// as the put that made inc, are ignored.
//
// It returns once the Watcher's watch start revision is fixed, so that the
// caller can then read the registration itself: a change committed before
// that read is seen by the read, and any later change is delivered (see
// the package documentation). ctx bounds only that wait; the error is then
// ctx's. After Close, the error is ErrClosed.
//
// signals has one slot and the Watcher never waits on it: a Recheck sent
// while one is pending is dropped, as it says the same; a Changed replaces
// a pending Recheck, as it says more, and is never lost. Close closes
// signals. cancel ends the subscription: it is
// told nothing more and its channel is not closed. cancel may be called
// more than once, and must be called when the subscriber is done, even
// after Changed, or the subscription stays in the Watcher until Close.
// Several subscriptions of one name, with one inc or several, are
// independent.
func (w *Watcher) Subscribe(ctx context.Context, name string, inc int64) (signals <-chan Signal, cancel func(), err error) {
	s := &sub{inc: inc, ch: make(chan Signal, 1)}
	if cancel, err = w.subscribe(ctx, name, s); err != nil {
		return nil, nil, err
	}
	return s.ch, cancel, nil
}

// SubscribeFunc is Subscribe for a subscriber that holds many
// subscriptions and cannot wait on a channel for each: f is called with
// each signal Subscribe's channel would receive (a Recheck while one is
// pending too). f is called from the Watcher's goroutine with its lock
// held: it must not block, nor call the Watcher. After cancel returns, or
// once the Watcher is closed, f is not called again.
func (w *Watcher) SubscribeFunc(ctx context.Context, name string, inc int64, f func(Signal)) (cancel func(), err error) {
	return w.subscribe(ctx, name, &sub{inc: inc, f: f})
}

// subscribe registers s once the watch's start revision is fixed.
func (w *Watcher) subscribe(ctx context.Context, name string, s *sub) (cancel func(), err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, ErrClosed
	}
	if !w.started {
		w.started = true
		w.wg.Add(1)
		go w.run()
	}
	w.mu.Unlock()

	select {
	case <-w.ready:
	default:
		select {
		case <-w.ready:
		case <-w.ctx.Done():
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	w.subs[name] = append(w.subs[name], s)
	return func() { w.unsubscribe(name, s) }, nil
}

// unsubscribe removes s from name's subscriptions, if it is still there.
func (w *Watcher) unsubscribe(name string, s *sub) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ss := w.subs[name]
	for i, x := range ss {
		if x != s {
			continue
		}
		if len(ss) == 1 {
			delete(w.subs, name)
			return
		}
		last := len(ss) - 1
		ss[i] = ss[last]
		ss[last] = nil
		w.subs[name] = ss[:last]
		return
	}
}

// Close ends the watch and waits for the Watcher's goroutine to return,
// then closes the channel of every subscription not cancelled: a closed
// channel says that nothing more will be reported (SubscribeFunc's funcs
// are not called: their subscriber learns of the end from whoever closed
// the Watcher). Subscribe then returns
// ErrClosed. Close may be called more than once.
func (w *Watcher) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.stop()
	w.wg.Wait()

	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ss := range w.subs {
		for _, s := range ss {
			if s.ch != nil {
				close(s.ch)
			}
		}
	}
	clear(w.subs)
}

// run watches the registrations from a fixed start revision until Close,
// resuming where it stopped after a failure, and from the current revision,
// with a Recheck for everyone, when etcd compacted the revisions in between.
func (w *Watcher) run() {
	defer w.wg.Done()
	backoff := retry.Backoff{Min: minBackoff, Max: maxBackoff}
	first := true
	var next int64 // the revision to watch from; 0: none fixed
	for w.ctx.Err() == nil {
		if next == 0 {
			rev, err := w.currentRevision()
			if err != nil {
				if w.ctx.Err() == nil {
					w.log.Warn("regwatch: cannot read the current revision", "err", err)
				}
				retry.Sleep(w.ctx, backoff.Next())
				continue
			}
			next = rev + 1
			if first {
				first = false
				close(w.ready)
			} else {
				w.recheckAll()
			}
		}
		var err error
		next, err = w.watch(next, &backoff)
		switch {
		case w.ctx.Err() != nil:
			return
		case errors.Is(err, errCompacted):
			w.log.Warn("regwatch: the registrations' watch lost its place; subscribers will read again", "from", next, "err", err)
			next = 0
		default:
			w.log.Warn("regwatch: the registrations' watch broke; watching again", "from", next, "err", err)
		}
		retry.Sleep(w.ctx, backoff.Next())
	}
}

// currentRevision returns etcd's current revision. Any linearizable read
// has it in its header; one of a single key (the prefix itself, which is no
// registration) costs etcd the least.
func (w *Watcher) currentRevision() (int64, error) {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	resp, err := w.cli.Get(ctx, w.layout.RegPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// watch watches the registrations from revision from, dispatching events,
// until the watch fails or Close. It returns the revision to resume from
// and why the watch ended (errCompacted when from was compacted). It
// resets backoff once the watch delivers anything.
func (w *Watcher) watch(from int64, backoff *retry.Backoff) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	w.mu.Lock()
	w.stopWatch = cancel
	w.mu.Unlock()
	wch := w.cli.Watch(wctx, w.layout.RegPrefix(),
		clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	defer func() {
		cancel()
		for range wch { // until the client's goroutine for the watch is done
		}
	}()
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return from, fmt.Errorf("%w: compacted up to %d", errCompacted, wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return from, err
		}
		backoff.Reset()
		if wr.IsProgressNotify() {
			// Every event up to the header's revision was delivered: etcd
			// sends progress only to a watch that has caught up.
			from = max(from, wr.Header.Revision+1)
			continue
		}
		if n := len(wr.Events); n > 0 {
			w.dispatch(wr.Events)
			from = wr.Events[n-1].Kv.ModRevision + 1
		}
	}
	if err := wctx.Err(); err != nil {
		return from, err
	}
	return from, errWatchClosed
}

// dispatch sends Changed to the subscriptions that evs end.
func (w *Watcher) dispatch(evs []*clientv3.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range evs {
		for _, s := range w.subs[w.layout.NameFromReg(string(ev.Kv.Key))] {
			// A delete's ModRevision is the delete's revision.
			if !s.ended && ev.Kv.ModRevision > s.inc {
				s.ended = true
				s.signal(Changed)
			}
		}
	}
}

// recheckAll sends Recheck to every subscription not ended; one already
// pending stands for it.
func (w *Watcher) recheckAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ss := range w.subs {
		for _, s := range ss {
			if !s.ended {
				s.signal(Recheck)
			}
		}
	}
}
