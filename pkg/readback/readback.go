// Package readback is the leader's online check of what readers see: it
// re-reads a sample of the keys the applier wrote, a moment after each
// write, from the server a reader would use (the leader's own ring), and
// counts what it found as ok, missing, stale or misplaced (see Result).
//
// It is off the write path. The applier's AfterWrite hook (Observe) only
// draws the sample and hands it to a bounded queue without waiting: a
// full queue drops the sample and counts it (Stats.Dropped). One
// goroutine (Run) reads the queued keys, each once its Delay has passed.
// A sampled key written again before it is read is not judged (its read
// would race the newer write) and is counted as superseded; a key whose
// server changed meanwhile (a change of topology) likewise.
//
// A write lands in memcached a little before the applier reports it to
// Observe. So that a read racing a newer write of its key is not taken for
// a stale or missing item, a finding other than ok is held until the
// applier's round in progress at the read has ended (RoundDone, the
// applier's Round hook), by when every write the read could have seen was
// observed; a write of the key among them makes the sample superseded.
// Each judgement is logged: ok at debug level, the others at warn, with
// the key, the terms and the token, so that a finding can be followed.
package readback

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"golang.org/x/time/rate"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// Defaults of Config.
const (
	// DefaultRate is the fraction of writes serve reads back.
	DefaultRate = 0.01
	// DefaultDelay is how long after a write its key is read back.
	DefaultDelay = 100 * time.Millisecond
	// DefaultQueueSize bounds the samples waiting to be read.
	DefaultQueueSize = 4096
	// DefaultRoundWait bounds how long a finding other than ok waits for
	// the applier's round in progress to end.
	DefaultRoundWait = time.Second
)

// Result is what a read-back found.
type Result int

// The results.
const (
	// OK: the reader's server holds the written value under the write's
	// term (or a newer term's item), or nothing after a delete or an
	// expiry.
	OK Result = iota
	// Missing: no server holds the key the write set.
	Missing
	// Stale: the reader's server holds an older term's item, another value
	// under the write's term, or an item after the delete.
	Stale
	// Misplaced: the key is absent from the reader's server and present
	// on another.
	Misplaced
	numResults
)

// Results are the results in order, as the metric's result label spells
// them.
var Results = []Result{OK, Missing, Stale, Misplaced}

// String is the result's label: ok, missing, stale or misplaced.
func (r Result) String() string {
	return [...]string{"ok", "missing", "stale", "misplaced"}[r]
}

// Reasons a sample is dropped, the metric's reason label.
const (
	// DropQueueFull: the queue was full when the sample was drawn.
	DropQueueFull = "queue_full"
	// DropSuperseded: the key was written again, or its server changed,
	// before it was read.
	DropSuperseded = "superseded"
	// DropError: the read failed (a server down, a timeout).
	DropError = "error"
)

// Stats counts the read-backs. Its zero value is ready; it may be shared
// with an exporter of metrics.
type Stats struct {
	results          [numResults]atomic.Uint64
	queueFull, super atomic.Uint64
	errs             atomic.Uint64
}

// Count returns how many read-backs found r.
func (s *Stats) Count(r Result) uint64 { return s.results[r].Load() }

// Dropped returns how many samples were dropped for reason (DropQueueFull,
// DropSuperseded, DropError).
func (s *Stats) Dropped(reason string) uint64 {
	switch reason {
	case DropQueueFull:
		return s.queueFull.Load()
	case DropSuperseded:
		return s.super.Load()
	case DropError:
		return s.errs.Load()
	}
	return 0
}

// Reader reads keys as the leader's writer does; *memfence.Writer is one.
type Reader interface {
	// Get reads key from the server PickServer names;
	// memcache.ErrCacheMiss when it is absent.
	Get(ctx context.Context, key string) (memfence.Item, error)
	// PickServer names key's server.
	PickServer(key string) (string, error)
	// Holders lists the servers holding key.
	Holders(ctx context.Context, key string) ([]string, error)
}

// Config configures a Checker. Zero values mean the defaults noted.
type Config struct {
	// Reader reads the keys; required.
	Reader Reader
	// Rate is the fraction of writes read back, in (0, 1]; zero means
	// DefaultRate.
	Rate float64
	// Delay is how long after a write its key is read; zero means
	// DefaultDelay.
	Delay time.Duration
	// QueueSize bounds the samples waiting; zero means DefaultQueueSize.
	QueueSize int
	// Stats counts the results; nil means the Checker's own.
	Stats *Stats
	// Timeout bounds one read-back (every read of it); zero means a
	// second.
	Timeout time.Duration
	// RoundWait bounds how long a finding other than ok waits for the
	// round in progress at its read to end (RoundDone) before it is
	// counted; zero means DefaultRoundWait. An idle applier ends no round,
	// so its findings wait this long.
	RoundWait time.Duration
	// Logger logs each judgement; nil means slog.Default().
	Logger *slog.Logger
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch {
	case c.Reader == nil:
		return config.Errorf("readback", "Reader", "is nil")
	case c.Rate < 0 || c.Rate > 1:
		return config.Errorf("readback", "Rate", "%g is not a fraction in (0, 1]", c.Rate)
	case c.Delay < 0:
		return config.Errorf("readback", "Delay", "%s is negative", c.Delay)
	case c.QueueSize < 0:
		return config.Errorf("readback", "QueueSize", "%d is negative", c.QueueSize)
	case c.Timeout < 0:
		return config.Errorf("readback", "Timeout", "%s is negative", c.Timeout)
	case c.RoundWait < 0:
		return config.Errorf("readback", "RoundWait", "%s is negative", c.RoundWait)
	}
	return nil
}

// sample is one write to read back. Until it is read, a newer write of
// its key takes its place (w and server, under Checker.mu), so that a key
// written faster than Delay is judged on its newest write rather than
// never.
type sample struct {
	w       applier.Write
	at      time.Time // when it was queued
	written time.Time // when w was observed
	server  string    // the key's server at w
	// superseded is set, under Checker.mu, when the key is written again
	// while it is being read.
	superseded bool
}

// Checker samples writes and reads them back.
type Checker struct {
	cfg   Config
	stats *Stats
	queue chan *sample
	// tracked counts the samples in waiting and reading, so that Observe
	// takes mu only while there are some.
	tracked atomic.Int64
	mu      sync.Mutex
	waiting map[string]*sample // queued, by key
	reading map[string]*sample // being read, by key
	rounds  roundClock
	log     *slog.Logger
	// warns bounds the findings logged at warn level (a memcached that
	// evicts everything must not flood the log); unlogged counts those
	// it held back, reported on the next line logged.
	warns    *rate.Limiter
	unlogged int
}

// Bounds of the findings logged at warn level: a burst, then so many a
// second.
const (
	warnBurst     = 100
	warnPerSecond = 10
)

// roundClock counts the applier's rounds and wakes whoever waits for the
// next one.
type roundClock struct {
	mu   sync.Mutex
	n    uint64
	next chan struct{} // closed when the round after n ends
}

func (r *roundClock) tick() {
	r.mu.Lock()
	r.n++
	if r.next != nil {
		close(r.next)
		r.next = nil
	}
	r.mu.Unlock()
}

// now returns the rounds ended so far and a channel closed when the next
// one ends.
func (r *roundClock) now() (uint64, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == nil {
		r.next = make(chan struct{})
	}
	return r.n, r.next
}

// New returns a Checker; its error is a *config.FieldError.
func New(cfg Config) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Rate = cmp.Or(cfg.Rate, DefaultRate)
	cfg.Delay = cmp.Or(cfg.Delay, DefaultDelay)
	cfg.QueueSize = cmp.Or(cfg.QueueSize, DefaultQueueSize)
	cfg.Timeout = cmp.Or(cfg.Timeout, time.Second)
	cfg.RoundWait = cmp.Or(cfg.RoundWait, DefaultRoundWait)
	st := cfg.Stats
	if st == nil {
		st = &Stats{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Checker{cfg: cfg, stats: st, queue: make(chan *sample, cfg.QueueSize), log: log,
		waiting: make(map[string]*sample), reading: make(map[string]*sample),
		warns: rate.NewLimiter(warnPerSecond, warnBurst)}, nil
}

// RoundDone is the applier's Round hook: a round's writes were all made
// and observed. It never waits.
func (c *Checker) RoundDone(int, time.Duration) { c.rounds.tick() }

// Stats returns the counts.
func (c *Checker) Stats() *Stats { return c.stats }

// Observe is the applier's AfterWrite hook. A write of a key whose sample
// waits takes that sample's place (the older write is counted superseded);
// a write of a key being read marks that read superseded; other writes are
// drawn into the sample at Rate. It never waits.
func (c *Checker) Observe(w applier.Write) {
	key := w.Op.Key
	if c.tracked.Load() > 0 {
		c.mu.Lock()
		if s := c.reading[key]; s != nil {
			s.superseded = true
		}
		if s := c.waiting[key]; s != nil {
			if server, err := c.cfg.Reader.PickServer(key); err == nil {
				s.w, s.server, s.written = w, server, time.Now()
				c.mu.Unlock()
				c.stats.super.Add(1)
				return
			}
		}
		c.mu.Unlock()
	}
	if c.cfg.Rate < 1 && rand.Float64() >= c.cfg.Rate {
		return
	}
	server, err := c.cfg.Reader.PickServer(key)
	if err != nil {
		return
	}
	now := time.Now()
	s := &sample{w: w, at: now, written: now, server: server}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.waiting[key]; dup {
		// Queued meanwhile by a concurrent write of the key (the
		// applier's writes of one key are made one after another, so
		// only with out-of-order hooks); one waiting sample is enough.
		c.stats.super.Add(1)
		return
	}
	select {
	case c.queue <- s:
		c.waiting[key] = s
		c.tracked.Add(1)
	default:
		c.stats.queueFull.Add(1)
	}
}

// Run reads the samples back until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var s *sample
		select {
		case <-ctx.Done():
			return
		case s = <-c.queue:
		}
		if d := time.Until(s.at.Add(c.cfg.Delay)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		c.check(ctx, s)
	}
}

// check reads s back and counts what it found.
func (c *Checker) check(ctx context.Context, s *sample) {
	c.mu.Lock()
	key := s.w.Op.Key
	delete(c.waiting, key)
	c.reading[key] = s
	w, server, written := s.w, s.server, s.written
	c.mu.Unlock()
	done := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.reading, key)
		c.tracked.Add(-1)
		return s.superseded
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	f, err := c.judge(rctx, w, server, written)
	cancel()
	if err == nil && f.result != OK {
		c.awaitRound(ctx)
	}
	// Judged only if no write of the key came while it was read.
	superseded := done()
	switch {
	case superseded:
		c.stats.super.Add(1)
	case errors.Is(err, errMoved):
		c.stats.super.Add(1)
	case err != nil:
		c.stats.errs.Add(1)
	default:
		c.stats.results[f.result].Add(1)
		c.logFinding(ctx, f, w, server)
	}
}

// logFinding logs a judgement: ok at debug level, the others at warn
// level within warnBurst and warnPerSecond (Run's goroutine only).
func (c *Checker) logFinding(ctx context.Context, f finding, w applier.Write, server string) {
	level := slog.LevelDebug
	if f.result != OK {
		level = slog.LevelWarn
	}
	if !c.log.Enabled(ctx, level) {
		return
	}
	attrs := []any{"result", f.result.String(), "key", w.Op.Key, "kind", w.Op.Kind.String(),
		"term", w.Term, "found_term", f.term, "token", w.Token.String(), "server", server}
	if level == slog.LevelWarn {
		if !c.warns.Allow() {
			c.unlogged++
			return
		}
		if c.unlogged > 0 {
			attrs = append(attrs, "unlogged_before", c.unlogged)
			c.unlogged = 0
		}
	}
	c.log.Log(ctx, level, "read back", attrs...)
}

// awaitRound waits until the applier's round in progress now has ended,
// or RoundWait has passed.
func (c *Checker) awaitRound(ctx context.Context) {
	n0, _ := c.rounds.now()
	timer := time.NewTimer(c.cfg.RoundWait)
	defer timer.Stop()
	for {
		n, next := c.rounds.now()
		if n > n0 {
			return
		}
		select {
		case <-next:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// errMoved means the key's server changed since the write.
var errMoved = errors.New("readback: the key's server changed")

// finding is what a read-back found: its result and the term of the item
// read (0 when none was).
type finding struct {
	result Result
	term   uint32
}

// judge reads back w, written to server at written.
func (c *Checker) judge(ctx context.Context, w applier.Write, server string, written time.Time) (finding, error) {
	key := w.Op.Key
	if now, err := c.cfg.Reader.PickServer(key); err != nil {
		return finding{}, err
	} else if now != server {
		return finding{}, errMoved
	}
	it, err := c.cfg.Reader.Get(ctx, key)
	switch {
	case errors.Is(err, memcache.ErrCacheMiss):
		if w.Op.Kind == ops.KindDelete || (w.Op.Expiration > 0 && time.Since(written) >= w.Op.Expiration-time.Second) {
			return finding{result: OK}, nil
		}
		holders, err := c.cfg.Reader.Holders(ctx, key)
		if err != nil {
			return finding{}, err
		}
		if len(holders) > 0 {
			return finding{result: Misplaced}, nil
		}
		return finding{result: Missing}, nil
	case err != nil:
		return finding{}, err
	}
	f := finding{result: OK, term: it.Term}
	switch {
	case it.Term > w.Term:
		// A newer leader wrote it.
	case it.Term < w.Term, w.Op.Kind == ops.KindDelete:
		f.result = Stale
	case !bytes.Equal(it.Value, w.Op.Value):
		f.result = Stale
	}
	return f, nil
}
