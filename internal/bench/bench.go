// Package bench measures the coordinator against the etcd and memcached it
// runs on, and against the baselines a user would otherwise build: raw etcd
// puts and transactions, an etcd mutex around direct memcached sets, a
// lease-based leader writing without fencing, raw gets+cas on memcached.
//
// Every scenario runs its baselines in the same process, against the same
// etcd and memcached, right before or interleaved with the coordinator's own
// measurement, and reports the ratio. Each run works in a namespace of its
// own (bench-<random>) and deletes its keys from etcd and memcached when it
// ends. Between scenarios, everything pending is applied, and an embedded
// etcd the run started itself is compacted up to the applied watermark.
//
// Scenarios, one file each:
//
//   - submit: accepted submissions per second and their latency.
//   - end-to-end: operations per second from submission to memcached, and
//     the submit-to-applied latency.
//   - peer: the same workload built without the coordinator.
//   - drain: how fast a new leader applies a backlog.
//   - failover: how long until a new leader applies, after a graceful stop
//     and after a kill -9 of the leader.
//   - memory: a node's resident memory while draining a backlog and with
//     many registrations (opt-in).
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Scenario names.
const (
	ScenarioSubmit   = "submit"
	ScenarioEndToEnd = "end-to-end"
	ScenarioPeer     = "peer"
	ScenarioDrain    = "drain"
	ScenarioFailover = "failover"
	ScenarioMemory   = "memory"
)

const (
	defaultMemcached  = node.DefaultMemcached
	maxBacklog        = 1_000_000
	defaultRegs       = 100_000
	defaultRounds     = 3
	childStopTimeout  = 15 * time.Second
	probeTimeout      = 60 * time.Second
	registrationTTL   = 60 * time.Second
	memcachedTimeout  = 2 * time.Second
	endToEndConc16    = 16
	endToEndConc64    = 64
	peerConcurrency   = 64
	drainBaselineConc = 16
)

// AllScenarios lists every scenario in the order they run.
var AllScenarios = []string{ScenarioSubmit, ScenarioEndToEnd, ScenarioPeer, ScenarioDrain, ScenarioFailover, ScenarioMemory}

// DefaultScenarios are the scenarios run when none are named: all but
// memory, which takes long and is opt-in.
var DefaultScenarios = []string{ScenarioSubmit, ScenarioEndToEnd, ScenarioPeer, ScenarioDrain, ScenarioFailover}

// DefaultConcurrency is the default list of concurrency levels of submit.
var DefaultConcurrency = []int{1, 16, 64, 256}

// Config configures a run. Zero values take the defaults noted.
type Config struct {
	// Endpoints of an existing etcd. Empty starts an embedded etcd in a
	// temporary directory on a free port, removed when the run ends.
	Endpoints []string
	// Memcached servers, host:port; default 127.0.0.1:11211.
	Memcached []string
	// Scenarios to run; default DefaultScenarios.
	Scenarios []string
	// Concurrency levels of the submit scenario; default DefaultConcurrency.
	Concurrency []int
	// ValueSize is the size of every value; default 100.
	ValueSize int
	// Duration of each throughput measurement; default 5s.
	Duration time.Duration
	// Keys is the size of the key space; default 1000.
	Keys int
	// Names is the number of registration names submissions spread over;
	// default 16.
	Names int
	// Backlog is the number of operations of the drain scenario; default
	// 100000, at most 1000000.
	Backlog int
	// MemoryBacklog is the larger backlog of the memory scenario, which
	// compares a node's peak memory draining it with draining a tenth of
	// it; default 1000000, at most 1000000.
	MemoryBacklog int
	// Registrations is the number of registrations of the memory scenario;
	// default 100000.
	Registrations int
	// LeaseTTL is the nodes' leadership lease TTL; default 5s.
	LeaseTTL time.Duration
	// FailoverRounds is how many graceful stops and how many kills the
	// failover scenario measures; default 3.
	FailoverRounds int
	// Repeat is how many times the submit, end-to-end and peer scenarios
	// run each comparison, ours and its baselines in reverse order every
	// other time; each table row is then the median run and each ratio the
	// median of the runs' ratios, which steadies them on a noisy machine.
	// Default 1, at most 20.
	Repeat int
	// DialTimeout bounds connecting to etcd; default 5s.
	DialTimeout time.Duration
	// Serve returns the command that runs one coordinator node as a child
	// process, given the arguments of `coordinator serve` (starting with
	// "serve"). Nil runs this executable (os.Executable) with them.
	Serve func(args []string) *exec.Cmd
	// Progress receives one line per step; nil discards it.
	Progress io.Writer
}

// withDefaults fills in defaults and checks the values.
func (c Config) withDefaults() (Config, error) {
	if len(c.Memcached) == 0 {
		c.Memcached = []string{defaultMemcached}
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = DefaultScenarios
	}
	if len(c.Concurrency) == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ValueSize == 0 {
		c.ValueSize = 100
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Keys == 0 {
		c.Keys = 1000
	}
	if c.Names == 0 {
		c.Names = 16
	}
	if c.Backlog == 0 {
		c.Backlog = 100_000
	}
	if c.MemoryBacklog == 0 {
		c.MemoryBacklog = maxBacklog
	}
	if c.Registrations == 0 {
		c.Registrations = defaultRegs
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.FailoverRounds == 0 {
		c.FailoverRounds = defaultRounds
	}
	if c.Repeat == 0 {
		c.Repeat = 1
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	seen := map[string]bool{}
	for _, s := range c.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return c, fmt.Errorf("%w: unknown scenario %q (known: %s)", ErrBadConfig, s, strings.Join(AllScenarios, ","))
		}
		if seen[s] {
			return c, fmt.Errorf("%w: scenario %q named twice", ErrBadConfig, s)
		}
		seen[s] = true
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 10_000 {
			return c, fmt.Errorf("%w: concurrency %d is not between 1 and 10000", ErrBadConfig, n)
		}
	}
	switch {
	case c.ValueSize < 1 || c.ValueSize > 512<<10:
		return c, fmt.Errorf("%w: value size %d is not between 1 and 524288", ErrBadConfig, c.ValueSize)
	case c.Duration < 0:
		return c, fmt.Errorf("%w: negative duration", ErrBadConfig)
	case c.Keys < 1:
		return c, fmt.Errorf("%w: keys must be at least 1", ErrBadConfig)
	case c.Names < 1 || c.Names > 10_000:
		return c, fmt.Errorf("%w: names %d is not between 1 and 10000", ErrBadConfig, c.Names)
	case c.Backlog < 1 || c.Backlog > maxBacklog:
		return c, fmt.Errorf("%w: backlog %d is not between 1 and %d", ErrBadConfig, c.Backlog, maxBacklog)
	case c.MemoryBacklog < 1 || c.MemoryBacklog > maxBacklog:
		return c, fmt.Errorf("%w: memory backlog %d is not between 1 and %d", ErrBadConfig, c.MemoryBacklog, maxBacklog)
	case c.Registrations < 1 || c.Registrations > maxBacklog:
		return c, fmt.Errorf("%w: registrations %d is not between 1 and %d", ErrBadConfig, c.Registrations, maxBacklog)
	case c.LeaseTTL < 2*time.Second || c.LeaseTTL%time.Second != 0:
		return c, fmt.Errorf("%w: lease TTL must be whole seconds, at least 2s (got %s)", ErrBadConfig, c.LeaseTTL)
	case c.FailoverRounds < 1 || c.FailoverRounds > 100:
		return c, fmt.Errorf("%w: failover rounds %d is not between 1 and 100", ErrBadConfig, c.FailoverRounds)
	case c.Repeat < 1 || c.Repeat > maxRepeat:
		return c, fmt.Errorf("%w: repeat %d is not between 1 and %d", ErrBadConfig, c.Repeat, maxRepeat)
	}
	return c, nil
}

// ErrBadConfig marks an invalid Config.
var ErrBadConfig = errors.New("bench: bad config")

// env is what the scenarios share during one run.
type env struct {
	cfg       Config
	ns        string
	layout    keyspace.Layout
	endpoints []string
	embedded  bool
	cli       *clientv3.Client
	client    *client.Client
	callers   []*client.Caller
	mc        *memcache.Client
	value     []byte
	keys      []string

	srv *embedded.Server
	dir string

	progressMu sync.Mutex

	mu       sync.Mutex
	node     *inProcNode
	children []*child
}

// Run runs the configured scenarios and returns the report. On a failure it
// returns what was measured so far together with the error. Everything it
// started is stopped and its keys are deleted before it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &env{cfg: cfg}
	rep := &Report{}
	defer e.close()
	if err := e.open(ctx); err != nil {
		return nil, err
	}
	rep.Namespace = e.ns
	rep.Environment = e.describe(ctx)
	rep.Settings = settingsOf(cfg)
	for _, name := range AllScenarios {
		if !slices.Contains(cfg.Scenarios, name) {
			continue
		}
		e.progress("== %s", name)
		start := time.Now()
		sr, err := e.runScenario(ctx, name)
		if sr != nil {
			sr.Seconds = time.Since(start).Seconds()
			rep.Scenarios = append(rep.Scenarios, *sr)
		}
		if err == nil {
			// Leave nothing behind for the next scenario.
			err = e.settle(ctx)
		}
		if err != nil {
			rep.Targets = evaluateTargets(rep, cfg)
			return rep, fmt.Errorf("bench: %s: %w", name, err)
		}
	}
	rep.Targets = evaluateTargets(rep, cfg)
	return rep, nil
}

func (e *env) runScenario(ctx context.Context, name string) (*ScenarioReport, error) {
	switch name {
	case ScenarioSubmit:
		return e.runSubmit(ctx)
	case ScenarioEndToEnd:
		return e.runEndToEnd(ctx)
	case ScenarioPeer:
		return e.runPeer(ctx)
	case ScenarioDrain:
		return e.runDrain(ctx)
	case ScenarioFailover:
		return e.runFailover(ctx)
	case ScenarioMemory:
		return e.runMemory(ctx)
	}
	return nil, fmt.Errorf("unknown scenario %q", name)
}

func (e *env) progress(format string, args ...any) {
	e.progressMu.Lock()
	defer e.progressMu.Unlock()
	fmt.Fprintf(e.cfg.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// nodeLog writes the in-process node's log lines to the progress stream.
type nodeLog struct{ e *env }

func (l nodeLog) Write(p []byte) (int, error) {
	l.e.progress("  node: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// open starts or dials etcd, registers the names and checks memcached.
func (e *env) open(ctx context.Context) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	e.ns = "bench-" + hex.EncodeToString(b[:])
	e.layout = keyspace.MustNew(e.ns)
	e.endpoints = e.cfg.Endpoints
	if len(e.endpoints) == 0 {
		dir, err := os.MkdirTemp("", "coordinator-bench-")
		if err != nil {
			return err
		}
		e.dir = dir
		e.progress("starting embedded etcd in %s", dir)
		srv, err := embedded.Start(ctx, embedded.Config{Dir: dir, ClientAddr: "127.0.0.1:0", LogLevel: "fatal"})
		if err != nil {
			return err
		}
		e.srv, e.endpoints, e.embedded = srv, srv.Endpoints(), true
	}
	cli, err := e.dial(ctx)
	if err != nil {
		return err
	}
	e.cli = cli
	e.client, err = client.New(client.Config{Etcd: cli, Namespace: e.ns})
	if err != nil {
		return err
	}
	e.mc = newMemcache(e.cfg.Memcached, 512)
	if err := e.mc.Ping(); err != nil {
		return fmt.Errorf("memcached at %s does not answer: %w", strings.Join(e.cfg.Memcached, ","), err)
	}
	e.value = make([]byte, e.cfg.ValueSize)
	for i := range e.value {
		e.value[i] = 'a' + byte(i%26)
	}
	e.keys = make([]string, e.cfg.Keys)
	for i := range e.keys {
		e.keys[i] = fmt.Sprintf("%s:k%d", e.ns, i)
	}
	e.progress("namespace %s, etcd %s, memcached %s", e.ns, strings.Join(e.endpoints, ","), strings.Join(e.cfg.Memcached, ","))
	for i := range e.cfg.Names {
		c, err := e.client.Register(ctx, fmt.Sprintf("w%d", i), client.RegisterOptions{TTL: registrationTTL})
		if err != nil {
			return fmt.Errorf("register: %w", err)
		}
		e.callers = append(e.callers, c)
	}
	return nil
}

// scratch is the etcd key name of the baselines' own keys (raw puts,
// guards, mutexes, the lease-based leader). They live in the run's
// namespace, so that they go with it, but after every key of the
// coordinator's layout: the node's watches (a standby's runs from the
// watermark key to the end of the ops range) never see the baselines'
// writes, which would cost the node and etcd work while a baseline runs,
// and a new leader catching up would be sent all of them.
func (e *env) scratch(name string) string { return e.layout.Prefix() + scratchDir + name }

// scratchDir sorts after every key of the coordinator's layout.
const scratchDir = "~bench/"

// dial connects to etcd and checks it answers.
func (e *env) dial(ctx context.Context) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.endpoints, DialTimeout: e.cfg.DialTimeout, Context: ctx, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd at %s: %w", strings.Join(e.endpoints, ","), err)
	}
	sctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(sctx, "health"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd at %s does not answer: %w", strings.Join(e.endpoints, ","), err)
	}
	return cli, nil
}

func newMemcache(servers []string, idle int) *memcache.Client {
	mc := memcache.New(servers...)
	mc.Timeout = memcachedTimeout
	mc.MaxIdleConns = idle
	return mc
}

// close stops every node, deletes the run's keys and stops etcd.
func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.stopNode()
	e.stopChildren()
	for _, c := range e.callers {
		_ = c.Close(ctx)
	}
	if e.cli != nil {
		if _, err := e.cli.Delete(ctx, e.layout.Prefix(), clientv3.WithPrefix()); err != nil {
			e.progress("cleanup: delete %s: %v", e.layout.Prefix(), err)
		}
		e.cli.Close()
	}
	if e.mc != nil {
		e.deleteMemcachedKeys()
		e.mc.Close()
	}
	if e.srv != nil {
		e.srv.Close()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// memcachedPrefixes are the key families a run writes to memcached.
var memcachedPrefixes = []string{"k", "mutex", "lead", "gc"}

func (e *env) deleteMemcachedKeys() {
	keys := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				_ = e.mc.Delete(k)
			}
		}()
	}
	for _, p := range memcachedPrefixes {
		for i := range e.cfg.Keys {
			keys <- fmt.Sprintf("%s:%s%d", e.ns, p, i)
		}
	}
	close(keys)
	wg.Wait()
}

// settle waits until nothing is pending in the namespace (a node applies
// what is left) and stops every node, so each scenario starts alike.
func (e *env) settle(ctx context.Context) error {
	resp, err := e.cli.Get(ctx, e.layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count > 0 {
		if err := e.startNode(ctx); err != nil {
			return err
		}
		if err := e.waitNothingPending(ctx); err != nil {
			return err
		}
	}
	e.stopNode()
	e.stopChildren()
	return e.compactOwnEtcd(ctx)
}

// compactOwnEtcd compacts the history of the etcd the run started itself
// (never one it was pointed at) up to the applied watermark, as a
// deployment that compacts does: every batch is a new etcd key, and the
// deleted ones a scenario leaves in etcd's index would slow the next
// scenario, ours and the baselines alike. The history from the watermark
// on, which a new leader reads, is kept.
func (e *env) compactOwnEtcd(ctx context.Context) error {
	if e.srv == nil {
		return nil
	}
	wm, _, err := tokenseq.Watermark(ctx, e.cli, e.layout)
	if err != nil {
		return err
	}
	if wm.Revision <= 1 {
		return nil
	}
	// Physical: wait until etcd has removed the old revisions, which it
	// does in the background, so that the next measurement does not share
	// etcd with that work.
	if _, err := e.cli.Compact(ctx, wm.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return fmt.Errorf("compact the embedded etcd: %w", err)
	}
	return nil
}

// waitNothingPending waits until no batch is pending: it reads the newest
// pending batch and waits for the applied watermark to cover it, on the
// client's shared watermark watch, until a read finds none. (Counting the
// pending batches after every change instead costs a count per applied
// round, each walking the deleted keys etcd still holds, and a watch that
// etcd serves from its resync loop.)
func (e *env) waitNothingPending(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var covered client.Token // the newest pending batch the watermark covered
	for {
		resp, err := e.cli.Get(ctx, e.layout.OpsPrefix(), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		kv := resp.Kvs[0]
		index, err := ops.RecordIndex(kv.Value)
		if err != nil {
			index = 0 // a bad record: the leader sets it aside in its round
		}
		newest := client.Token{Revision: kv.ModRevision, Index: index}
		if newest == covered {
			// Still there although covered: a record being set aside
			// again. Wait for the next change instead of reading in a loop.
			if err := waitChange(ctx, e.cli, e.layout.OpsPrefix(), resp.Header.Revision); err != nil {
				return err
			}
			continue
		}
		if err := e.client.WaitApplied(ctx, newest); err != nil {
			return err
		}
		covered = newest
	}
}

// inProcNode is a coordinator node run in this process.
type inProcNode struct {
	stats  *applier.Stats
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan error
}

// startNode starts an in-process node (with its own etcd connection) unless
// one runs. It does not wait for the node to lead: callers that need it
// applying wait for it (see probe).
func (e *env) startNode(ctx context.Context) error {
	e.mu.Lock()
	if e.node != nil {
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	cli, err := e.dial(ctx)
	if err != nil {
		return err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &inProcNode{stats: &applier.Stats{}, cli: cli, cancel: cancel, done: make(chan error, 1)}
	go func() {
		n.done <- node.Run(nctx, node.Config{
			Etcd: cli, Layout: e.layout, NodeID: "bench-inproc", LeaseTTL: e.cfg.LeaseTTL,
			Memcached: e.cfg.Memcached, Stats: n.stats,
			// Its warnings (retries, lost leadership) explain stalls.
			Logger: slog.New(slog.NewTextHandler(nodeLog{e}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	}()
	e.mu.Lock()
	e.node = n
	e.mu.Unlock()
	return nil
}

// stopNode stops the in-process node gracefully.
func (e *env) stopNode() {
	e.mu.Lock()
	n := e.node
	e.node = nil
	e.mu.Unlock()
	if n == nil {
		return
	}
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(childStopTimeout):
		e.progress("in-process node did not stop within %s", childStopTimeout)
	}
	n.cli.Close()
}

// probe submits one operation and waits until it is applied, which proves a
// leader is applying.
func (e *env) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	tok, err := e.callers[0].Set(ctx, e.keys[0], e.value, 0)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if err := e.client.WaitApplied(ctx, tok); err != nil {
		return fmt.Errorf("probe: no leader applied within %s: %w", probeTimeout, err)
	}
	return nil
}

// pending counts the pending batches.
func (e *env) pending(ctx context.Context) (int64, error) {
	resp, err := e.cli.Get(ctx, e.layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// key returns the key of operation i of worker w in family fam.
func (e *env) key(fam string, w, i int) string {
	n := (w*7919 + i*31) % e.cfg.Keys
	if fam == "k" {
		return e.keys[n]
	}
	return fmt.Sprintf("%s:%s%d", e.ns, fam, n)
}

// caller returns the caller worker w submits under.
func (e *env) caller(w int) *client.Caller { return e.callers[w%len(e.callers)] }
