package workload

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Config configures a workload.
type Config struct {
	// Endpoints are the etcd endpoints callers use.
	Endpoints []string
	// EndpointsFor gives some names their own endpoints (a proxy a test can
	// cut, say) and their own client. The other names share one client
	// (one etcd connection and submitter) on Endpoints, so that their
	// submissions made at the same time share etcd transactions (group
	// commit).
	EndpointsFor map[string][]string
	// Namespace is the coordinator namespace.
	Namespace string
	// Memcached is the address readers read from.
	Memcached string
	// Names are the callers' registration names, one caller each; callers
	// share a client (see EndpointsFor).
	Names []string
	// Keys is the key space.
	Keys []string
	// Readers is the number of readers polling memcached; default 2.
	Readers int
	// CallerTTL is the callers' lease TTL; default 2s.
	CallerTTL time.Duration
	// Seed seeds the callers' and readers' choices.
	Seed int64
	// Pause is the mean pause between a caller's submissions; default 120ms.
	Pause time.Duration
	// Beat, when positive, makes callers end their pauses on a common beat
	// (a multiple of Beat since the workload started), the mean pause
	// staying Pause: several names then submit at the same moment, and
	// those sharing a client share transactions. Default Pause; negative
	// for pauses that end anywhere.
	Beat time.Duration
	// ReadPause is the pause between a reader's gets; default 3ms.
	ReadPause time.Duration
	// CallTimeout bounds a submission; default 5s.
	CallTimeout time.Duration
	// RestartEvery is the mean number of submissions between restarts of a
	// caller (a new Register of its name); default 40, negative for never.
	RestartEvery int
	// MaxPending, when positive, makes callers hold off while this many of
	// their acknowledged submissions are above the applied watermark (a
	// caller with a bounded queue). Zero means no bound.
	MaxPending int
}

func (c *Config) defaults() {
	if c.Readers == 0 {
		c.Readers = 2
	}
	if c.CallerTTL == 0 {
		c.CallerTTL = 2 * time.Second
	}
	if c.Pause == 0 {
		c.Pause = 120 * time.Millisecond
	}
	if c.Beat == 0 {
		c.Beat = c.Pause
	}
	if c.ReadPause == 0 {
		c.ReadPause = 3 * time.Millisecond
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = 5 * time.Second
	}
	if c.RestartEvery == 0 {
		c.RestartEvery = 40
	}
}

// Workload is a running workload.
type Workload struct {
	cfg   Config
	rec   *Recorder
	began time.Time // the origin of the beat
	stop  chan struct{}
	// stopCtx is cancelled by Stop; waits use it, submissions do not (an
	// in-flight submission ends on its own timeout so that few outcomes
	// are left unknown).
	stopCtx    context.Context
	cancelStop context.CancelFunc
	once       sync.Once
	wg         sync.WaitGroup

	ok, refused, unknown, reads atomic.Int64
	// indexed counts the acknowledged tokens with a non-zero index: the
	// batch shared its transaction with another before it.
	indexed atomic.Int64

	lastMu sync.Mutex
	lastOK tokenseq.Token // the highest token acknowledged

	mu      sync.Mutex
	clients []*client.Client
	forced  map[string]chan struct{} // names asked to restart

	// The bound on pending submissions: acknowledged tokens not yet known
	// applied, and the watermark last read.
	pendMu    sync.Mutex
	pendToks  tokenHeap
	watermark tokenseq.Token
}

// Start starts the callers and readers.
func Start(cfg Config, rec *Recorder) (*Workload, error) {
	cfg.defaults()
	if len(cfg.Names) == 0 || len(cfg.Keys) == 0 {
		return nil, errors.New("workload: Names and Keys are required")
	}
	w := &Workload{cfg: cfg, rec: rec, began: time.Now(), stop: make(chan struct{}), forced: map[string]chan struct{}{}}
	w.stopCtx, w.cancelStop = context.WithCancel(context.Background())
	rng := rand.New(rand.NewSource(cfg.Seed))
	var shared *client.Client
	for _, name := range cfg.Names {
		var cli *client.Client
		if eps, ok := cfg.EndpointsFor[name]; ok {
			c, err := w.newClient(eps)
			if err != nil {
				w.Stop()
				return nil, fmt.Errorf("workload: client for %s: %w", name, err)
			}
			cli = c
		} else {
			if shared == nil {
				c, err := w.newClient(cfg.Endpoints)
				if err != nil {
					w.Stop()
					return nil, fmt.Errorf("workload: shared client: %w", err)
				}
				shared = c
			}
			cli = shared
		}
		w.forced[name] = make(chan struct{}, 1)
		wk := &worker{w: w, name: name, cli: cli, rng: rand.New(rand.NewSource(rng.Int63())), forced: w.forced[name]}
		w.wg.Add(1)
		go wk.run()
	}
	for i := range cfg.Readers {
		w.wg.Add(1)
		go w.reader("r"+strconv.Itoa(i), rand.New(rand.NewSource(rng.Int63())))
	}
	if cfg.MaxPending > 0 {
		cli, err := w.newClient(cfg.Endpoints)
		if err != nil {
			w.Stop()
			return nil, fmt.Errorf("workload: watermark client: %w", err)
		}
		w.wg.Add(1)
		go w.followWatermark(cli)
	}
	return w, nil
}

// newClient connects a client to eps; Stop closes it.
func (w *Workload) newClient(eps []string) (*client.Client, error) {
	cli, err := client.New(client.Config{Endpoints: eps, Namespace: w.cfg.Namespace})
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.clients = append(w.clients, cli)
	w.mu.Unlock()
	return cli, nil
}

// followWatermark reads the applied watermark every few milliseconds for
// the pending bound.
func (w *Workload) followWatermark(cli *client.Client) {
	defer w.wg.Done()
	for {
		ctx, cancel := context.WithTimeout(w.stopCtx, time.Second)
		resp, err := cli.Etcd().Get(ctx, cli.Layout().Applied())
		cancel()
		if err == nil && len(resp.Kvs) > 0 {
			if tok, err := tokenseq.ParseToken(string(resp.Kvs[0].Value)); err == nil {
				w.pendMu.Lock()
				w.watermark = tok
				w.pendMu.Unlock()
			}
		}
		if !w.sleep(20 * time.Millisecond) {
			return
		}
	}
}

// pending counts the acknowledged tokens above the watermark.
func (w *Workload) pending() int {
	w.pendMu.Lock()
	defer w.pendMu.Unlock()
	for w.pendToks.Len() > 0 && !w.watermark.Less(w.pendToks[0]) {
		heap.Pop(&w.pendToks)
	}
	return w.pendToks.Len()
}

// holdOff waits while the pending bound is reached; it reports false when
// the workload stopped.
func (w *Workload) holdOff() bool {
	for w.cfg.MaxPending > 0 && w.pending() >= w.cfg.MaxPending {
		if !w.sleep(20 * time.Millisecond) {
			return false
		}
	}
	return !w.stopped()
}

// acknowledged counts an acknowledged token.
func (w *Workload) acknowledged(tok tokenseq.Token) {
	w.ok.Add(1)
	if tok.Index != 0 {
		w.indexed.Add(1)
	}
	w.lastMu.Lock()
	w.lastOK = tokenseq.Max(w.lastOK, tok)
	w.lastMu.Unlock()
	if w.cfg.MaxPending <= 0 {
		return
	}
	w.pendMu.Lock()
	heap.Push(&w.pendToks, tok)
	w.pendMu.Unlock()
}

// tokenHeap is a min-heap of tokens.
type tokenHeap []tokenseq.Token

func (h tokenHeap) Len() int           { return len(h) }
func (h tokenHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h tokenHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *tokenHeap) Push(x any)        { *h = append(*h, x.(tokenseq.Token)) }
func (h *tokenHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Stop stops every caller and reader and waits for them; in-flight
// submissions finish (or time out) first. Incarnations are closed.
func (w *Workload) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.cancelStop()
	})
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.clients {
		c.Close()
	}
	w.clients = nil
}

// Restart asks the caller of name to restart (register again) before its
// next submission.
func (w *Workload) Restart(name string) {
	select {
	case w.forced[name] <- struct{}{}:
	default:
	}
}

// OK counts the acknowledged submissions so far.
func (w *Workload) OK() int64 { return w.ok.Load() }

// Refused counts the submissions refused as superseded or expired so far.
func (w *Workload) Refused() int64 { return w.refused.Load() }

// Unknown counts the submissions with an unknown outcome so far.
func (w *Workload) Unknown() int64 { return w.unknown.Load() }

// Reads counts the reads recorded so far.
func (w *Workload) Reads() int64 { return w.reads.Load() }

// Indexed counts the acknowledged submissions so far whose token has a
// non-zero index: each shared its etcd transaction with an earlier batch
// (group commit).
func (w *Workload) Indexed() int64 { return w.indexed.Load() }

// LastToken is the highest token acknowledged so far.
func (w *Workload) LastToken() tokenseq.Token {
	w.lastMu.Lock()
	defer w.lastMu.Unlock()
	return w.lastOK
}

// WaitOK waits until at least n more submissions than now were
// acknowledged, and returns the highest token acknowledged then.
func (w *Workload) WaitOK(ctx context.Context, n int64) (tokenseq.Token, error) {
	target := w.ok.Load() + n
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for w.ok.Load() < target {
		select {
		case <-ctx.Done():
			return tokenseq.Zero, fmt.Errorf("workload: %d of %d more acknowledged submissions (refused %d, unknown %d): %w",
				n-(target-w.ok.Load()), n, w.refused.Load(), w.unknown.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return w.LastToken(), nil
}

func (w *Workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// onBeat returns how long to wait for a pause of about d to end on the
// beat: the pause is moved to the beat nearest to its end (by at most half
// a beat either way, so the mean pause does not change).
func (w *Workload) onBeat(d time.Duration) time.Duration {
	beat := w.cfg.Beat
	if beat <= 0 {
		return d
	}
	now := time.Since(w.began)
	end := (now + d + beat/2) / beat * beat
	return max(end-now, 0)
}

// sleep waits d or until Stop; it reports whether d elapsed.
func (w *Workload) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.stop:
		return false
	case <-t.C:
		return true
	}
}

func (w *Workload) reader(name string, rng *rand.Rand) {
	defer w.wg.Done()
	mc := memcache.New(w.cfg.Memcached)
	mc.Timeout = 500 * time.Millisecond
	defer mc.Close()
	for !w.stopped() {
		key := w.cfg.Keys[rng.Intn(len(w.cfg.Keys))]
		if readKey(w.rec, mc, name, key) {
			w.reads.Add(1)
			w.sleep(w.cfg.ReadPause)
		} else {
			w.sleep(20 * time.Millisecond) // memcached is down
		}
	}
}

// readKey gets key and records what it saw; it reports false (and records
// nothing) when memcached could not be read.
func readKey(rec *Recorder, mc *memcache.Client, reader, key string) bool {
	start := rec.Now()
	it, err := mc.Get(key)
	end := rec.Now()
	switch {
	case errors.Is(err, memcache.ErrCacheMiss):
		rec.Read(checker.Read{Reader: reader, Key: key, Start: start, End: end})
	case err != nil:
		return false
	default:
		rec.Read(checker.Read{Reader: reader, Key: key, Start: start, End: end, Found: true, Value: string(it.Value), Term: it.Flags})
	}
	return true
}

// worker is the caller of one name: one incarnation at a time, restarted
// now and then.
type worker struct {
	w       *Workload
	name    string
	cli     *client.Client
	rng     *rand.Rand
	forced  chan struct{}
	inc     int            // local incarnation counter, part of every id
	seq     atomic.Int64   // submission counter, shared with old incarnations
	old     sync.WaitGroup // goroutines of old incarnations and waits
	waits   atomic.Int64   // waits in flight
	waitSeq atomic.Int64
}

// maxWaits bounds the WaitApplied calls a caller has in flight.
const maxWaits = 4

func seq(n int64) string { return strconv.FormatInt(n, 10) }

type incarnation struct {
	caller *client.Caller
	n      int
}

func (k *worker) run() {
	defer k.w.wg.Done()
	cur := k.register(false)
	for !k.w.stopped() {
		if cur == nil {
			if !k.w.sleep(100 * time.Millisecond) {
				break
			}
			cur = k.register(false)
			continue
		}
		pause := time.Duration(float64(k.w.cfg.Pause) * (0.5 + k.rng.Float64()))
		if !k.w.sleep(k.w.onBeat(pause)) || !k.w.holdOff() {
			break
		}
		restart := false
		select {
		case <-k.forced:
			restart = true
		default:
			restart = k.w.cfg.RestartEvery > 0 && k.rng.Intn(k.w.cfg.RestartEvery) == 0
		}
		if restart {
			// A restart: the new process registers while the old one
			// still has a submission or two in flight.
			old := cur
			cur = k.register(k.rng.Intn(2) == 0)
			k.old.Add(1)
			go k.zombie(old, 1+k.rng.Intn(2), rand.New(rand.NewSource(k.rng.Int63())))
			continue
		}
		res, tok, opsDone := k.submit(cur, k.rng)
		switch res {
		case checker.Refused:
			// Lease lost or superseded: restart under the same name.
			k.closeLater(cur)
			cur = k.register(k.rng.Intn(2) == 0)
		case checker.OK:
			if k.rng.Intn(5) == 0 && k.waits.Load() < maxWaits {
				// The caller goes on submitting while it waits, as a
				// process with several threads would.
				k.waits.Add(1)
				k.old.Add(1)
				go k.waitAndRead(cur, tok, opsDone, seq(k.waitSeq.Add(1)))
			}
		}
	}
	k.old.Wait()
	if cur != nil {
		k.close(cur)
	}
}

// register registers the name again, retrying until it works or the
// workload stops.
func (k *worker) register(drain bool) *incarnation {
	for !k.w.stopped() {
		timeout := 10 * time.Second
		if drain {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(k.w.stopCtx, timeout)
		start := k.w.rec.Now()
		c, err := k.cli.Register(ctx, k.name, client.RegisterOptions{TTL: k.w.cfg.CallerTTL, WaitDrained: drain})
		end := k.w.rec.Now()
		cancel()
		if err == nil {
			k.inc++
			k.w.rec.Registered(checker.Registration{Name: k.name, Incarnation: c.Incarnation(), Start: start, End: end, WaitDrained: drain})
			return &incarnation{caller: c, n: k.inc}
		}
		drain = false
		if !k.w.sleep(100 * time.Millisecond) {
			break
		}
	}
	return nil
}

// zombie submits n more batches under an old incarnation, then closes it.
func (k *worker) zombie(old *incarnation, n int, rng *rand.Rand) {
	defer k.old.Done()
	if old == nil {
		return
	}
	for range n {
		k.submit(old, rng)
	}
	k.close(old)
}

func (k *worker) closeLater(inc *incarnation) {
	k.old.Add(1)
	go func() {
		defer k.old.Done()
		k.close(inc)
	}()
}

func (k *worker) close(inc *incarnation) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = inc.caller.Close(ctx)
}

// submit sends one batch of one to three operations and records it.
func (k *worker) submit(inc *incarnation, rng *rand.Rand) (checker.Result, tokenseq.Token, []checker.Op) {
	seq := k.seq.Add(1)
	id := fmt.Sprintf("%s.%d.%d", k.name, inc.n, seq)
	n := 1
	switch r := rng.Intn(20); {
	case r == 0:
		n = 3
	case r < 4:
		n = 2
	}
	var batch []ops.Op
	var rec []checker.Op
	for i := range n {
		key := k.w.cfg.Keys[rng.Intn(len(k.w.cfg.Keys))]
		if rng.Intn(4) == 0 {
			batch = append(batch, ops.Delete(key))
			rec = append(rec, checker.Op{Kind: checker.KindDelete, Key: key})
			continue
		}
		v := id + "." + strconv.Itoa(i)
		batch = append(batch, ops.Set(key, []byte(v), 0))
		rec = append(rec, checker.Op{Kind: checker.KindSet, Key: key, Value: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.w.cfg.CallTimeout)
	start := k.w.rec.Now()
	tok, err := inc.caller.SubmitWithID(ctx, id, batch...)
	end := k.w.rec.Now()
	cancel()
	c := checker.Call{ID: id, Name: k.name, Incarnation: inc.caller.Incarnation(), Ops: rec, Start: start, End: end}
	switch {
	case err == nil:
		c.Result, c.Token = checker.OK, checkerToken(tok)
		k.w.acknowledged(tok)
	case errors.Is(err, client.ErrSuperseded) || errors.Is(err, client.ErrExpired):
		c.Result, c.Err = checker.Refused, err.Error()
		k.w.refused.Add(1)
	default:
		c.Result, c.Err = checker.Unknown, err.Error()
		k.w.unknown.Add(1)
	}
	k.w.rec.Call(c)
	return c.Result, tok, rec
}

// checkerToken is tok as the history records it.
func checkerToken(tok tokenseq.Token) checker.Token {
	return checker.Token{Revision: tok.Revision, Index: tok.Index}
}

// waitAndRead waits until tok is applied (G8), then reads the batch's keys
// back as reader "rw-<name>-<n>" with its own memcached client.
func (k *worker) waitAndRead(inc *incarnation, tok tokenseq.Token, batch []checker.Op, n string) {
	defer k.old.Done()
	defer k.waits.Add(-1)
	ctx, cancel := context.WithTimeout(k.w.stopCtx, 20*time.Second)
	defer cancel()
	start := k.w.rec.Now()
	err := inc.caller.WaitApplied(ctx, tok)
	end := k.w.rec.Now()
	if err != nil {
		return
	}
	k.w.rec.Applied(checker.Applied{Token: checkerToken(tok), Start: start, End: end})
	mc := memcache.New(k.w.cfg.Memcached)
	mc.Timeout = time.Second
	defer mc.Close()
	for _, o := range batch {
		if readKey(k.w.rec, mc, "rw-"+k.name+"-"+n, o.Key) {
			k.w.reads.Add(1)
		}
	}
}
