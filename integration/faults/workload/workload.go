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

	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
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
	// APIFor makes some names submit through a node's caller API (the
	// address of its --api-listen, through pkg/apiclient) rather than
	// straight to etcd; each such name has a client of its own.
	APIFor map[string]string
	// Namespace is the coordinator namespace.
	Namespace string
	// Memcached is the address readers read from.
	Memcached string
	// Selector, when set, picks the server of each key readers read
	// (memcache.NewFromSelector): a pool read with the deployment's
	// distribution. Memcached is then unused.
	Selector memcache.ServerSelector
	// Security is the callers' TLS setting (client.Config.Security).
	Security etcdconn.Security
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
	// Burst, when positive, makes callers now and then submit this many
	// batches at once, each setting one of BurstKeys(Burst), and wait for
	// the last batch of each transaction they share: with more than two
	// transactions' worth (128), the leader's rounds end inside those
	// transactions. The keys of a burst are not in Keys; read them in the
	// final state too. Zero means no bursts.
	Burst int
	// BurstEvery is the mean number of submissions between a caller's
	// bursts; default 60.
	BurstEvery int
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
	if c.BurstEvery == 0 {
		c.BurstEvery = 60
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
	// okFor counts the acknowledged submissions of each name.
	okFor map[string]*atomic.Int64
	// indexed counts the acknowledged tokens with a non-zero index: the
	// batch shared its transaction with another before it.
	indexed atomic.Int64

	lastMu sync.Mutex
	lastOK tokenseq.Token // the highest token acknowledged

	// etcd reads the applied watermark: right after each WaitApplied
	// returned, and for the pending bound.
	etcd *client.Client

	mu      sync.Mutex
	clients []*client.Client
	// apiClients are the clients of the names in APIFor.
	apiClients []*apiclient.Client
	forced     map[string]chan struct{} // names asked to restart

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
	w := &Workload{cfg: cfg, rec: rec, began: time.Now(), stop: make(chan struct{}), forced: map[string]chan struct{}{}, okFor: map[string]*atomic.Int64{}}
	for _, name := range cfg.Names {
		w.okFor[name] = new(atomic.Int64)
	}
	w.stopCtx, w.cancelStop = context.WithCancel(context.Background())
	etcd, err := w.newClient(cfg.Endpoints)
	if err != nil {
		w.Stop()
		return nil, fmt.Errorf("workload: watermark client: %w", err)
	}
	w.etcd = etcd
	rng := rand.New(rand.NewSource(cfg.Seed))
	var shared *client.Client
	for _, name := range cfg.Names {
		var cli registrar
		if addr, ok := cfg.APIFor[name]; ok {
			c, err := apiclient.New(apiclient.Config{Addr: addr})
			if err != nil {
				w.Stop()
				return nil, fmt.Errorf("workload: API client for %s: %w", name, err)
			}
			w.mu.Lock()
			w.apiClients = append(w.apiClients, c)
			w.mu.Unlock()
			cli = apiRegistrar{cli: c}
		} else if eps, ok := cfg.EndpointsFor[name]; ok {
			c, err := w.newClient(eps)
			if err != nil {
				w.Stop()
				return nil, fmt.Errorf("workload: client for %s: %w", name, err)
			}
			cli = etcdRegistrar{cli: c}
		} else {
			if shared == nil {
				c, err := w.newClient(cfg.Endpoints)
				if err != nil {
					w.Stop()
					return nil, fmt.Errorf("workload: shared client: %w", err)
				}
				shared = c
			}
			cli = etcdRegistrar{cli: shared}
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
		w.wg.Add(1)
		go w.followWatermark(w.etcd)
	}
	return w, nil
}

// newClient connects a client to eps; Stop closes it.
func (w *Workload) newClient(eps []string) (*client.Client, error) {
	cli, err := client.New(client.Config{Endpoints: eps, Namespace: w.cfg.Namespace, Security: w.cfg.Security})
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.clients = append(w.clients, cli)
	w.mu.Unlock()
	return cli, nil
}

// readWatermark reads the applied watermark with a linearizable read; the
// zero token when it cannot.
func (w *Workload) readWatermark(ctx context.Context) tokenseq.Token {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	wm, _, err := tokenseq.Watermark(rctx, w.etcd.Etcd(), w.etcd.Layout())
	if err != nil {
		return tokenseq.Zero
	}
	return wm
}

// memcachedClient is a client of the servers readers read.
func (w *Workload) memcachedClient(timeout time.Duration) *memcache.Client {
	var mc *memcache.Client
	if w.cfg.Selector != nil {
		mc = memcache.NewFromSelector(w.cfg.Selector)
	} else {
		mc = memcache.New(w.cfg.Memcached)
	}
	mc.Timeout = timeout
	return mc
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
	for _, c := range w.apiClients {
		c.Close()
	}
	w.apiClients = nil
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

// OKFor counts the submissions of name acknowledged so far.
func (w *Workload) OKFor(name string) int64 {
	if c := w.okFor[name]; c != nil {
		return c.Load()
	}
	return 0
}

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

// WaitOK waits until at least n more submissions than at the call were
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
