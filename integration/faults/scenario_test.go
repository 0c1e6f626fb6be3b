package faults

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/integration/cluster"
	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
	"github.com/coordinator-dev/coordinator/integration/faults/workload"
	"github.com/coordinator-dev/coordinator/pkg/election"
)

var (
	flagSeed     = flag.Int64("faults.seed", 0, "seed of TestRandomFaults; 0 picks one from the clock")
	flagDuration = flag.Duration("faults.duration", 20*time.Second, "how long TestRandomFaults injects faults")
	flagKeep     = flag.Bool("faults.keep", false, "save every history as JSON, not only those with a violation")
	flagTLS      = flag.Bool("faults.tls", false, "run etcd with TLS and client-certificate authentication, except in scenarios that need it plain")
)

// recoverTimeout bounds every wait for the cluster to get somewhere (a new
// leader, operations applied): generous, as the machine may be busy.
const recoverTimeout = 2 * time.Minute

// scenarioTimeout bounds a whole scenario unless its setup says otherwise.
const scenarioTimeout = 6 * time.Minute

var (
	keys  = []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	names = []string{"w0", "w1", "w2", "w3"}
)

// apiName is the caller that submits through a node's API with
// setup.apiCaller.
const apiName = "w3"

// scenario is one fault test: a cluster, a recorded workload, and the
// faults injected so far.
type scenario struct {
	t     *testing.T
	name  string
	ctx   context.Context
	c     *cluster.Cluster
	rec   *workload.Recorder
	w     *workload.Workload
	began time.Time
	// callerLink is the proxy caller w0 reaches etcd through, when asked.
	callerLink *proxy.Proxy
	// apiNode is the node whose API caller apiName submits through, when
	// asked.
	apiNode *cluster.Node
	// keys are every key the workload writes: the key space, and the
	// bursts' keys with setup.burst.
	keys []string

	// soak samples the processes in a soak run; nil otherwise.
	soak *soaker

	mu       sync.Mutex
	open     map[int]bool  // faults not healed yet
	mcDown   map[int]int64 // when each memcached server that is down went down, by pool index
	finished bool
}

// setup configures start.
type setup struct {
	seed int64
	// callerLink makes caller w0 reach etcd through a proxy the test can
	// cut (lease expiry).
	callerLink bool
	// timeout bounds the whole scenario; default scenarioTimeout.
	timeout time.Duration
	// leaseTTL is the nodes' lease (cluster.Config.LeaseTTL); zero means
	// the cluster's default.
	leaseTTL time.Duration
	// maxPending is workload.Config.MaxPending; zero means no bound.
	maxPending int
	// monitor starts the nodes with their HTTP monitor (for /metrics).
	monitor bool
	// pool is the number of memcached servers (cluster.Config.Pool);
	// zero means -faults.pool.
	pool int
	// tls runs etcd with TLS and client certificates (cluster.Config.TLS)
	// whatever -faults.tls says.
	tls bool
	// plain runs etcd without TLS whatever -faults.tls says (a scenario
	// with a process that cannot take certificates).
	plain bool
	// apiCaller makes caller apiName submit through the caller API of the
	// node that leads when the workload starts (scenario.apiNode).
	apiCaller bool
	// burst is workload.Config.Burst: callers now and then submit this
	// many batches at once and wait for them; zero means none.
	burst int
}

// start starts a cluster and a workload and waits until the workload is
// under way.
func start(t *testing.T, name string, o setup) *scenario {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite skipped in -short mode")
	}
	if o.timeout == 0 {
		o.timeout = scenarioTimeout
	}
	if o.seed == 0 {
		o.seed = *flagSeed
	}
	if o.seed == 0 {
		o.seed = time.Now().UnixNano() % 1_000_000_000
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	s := &scenario{t: t, name: name, ctx: ctx, began: time.Now(), open: map[int]bool{}, mcDown: map[int]int64{}}
	s.keys = append(slices.Clone(keys), workload.BurstKeys(o.burst)...)
	tls := o.tls || (*flagTLS && !o.plain)
	pool := o.pool
	if pool == 0 {
		pool = *flagPool
	}
	// Every write is read back: the read-back rule (checker.RuleReadBack)
	// judges as many as the workload leaves unsuperseded.
	s.c = cluster.Start(ctx, t, cluster.Config{Monitor: o.monitor, Pool: pool, TLS: tls, API: o.apiCaller, LeaseTTL: o.leaseTTL,
		ReadbackRate: 1})
	sel, err := s.c.ReadSelector()
	if err != nil {
		t.Fatalf("memcached selector: %v", err)
	}
	var eps []string
	for _, m := range s.c.Members {
		eps = append(eps, m.Endpoint())
	}
	cfg := workload.Config{
		Endpoints: eps, Namespace: s.c.Namespace, Selector: sel,
		Security: s.c.CallerSecurity(),
		Names:    names, Keys: keys, Seed: o.seed, MaxPending: max(o.maxPending, 0), Burst: o.burst,
	}
	if o.callerLink {
		p, err := proxy.New("127.0.0.1:0", s.c.Members[0].ClientAddr)
		if err != nil {
			t.Fatalf("caller proxy: %v", err)
		}
		t.Cleanup(func() { p.Close() })
		s.callerLink = p
		cfg.EndpointsFor = map[string][]string{"w0": {s.c.ClientURL(p.Addr())}}
	}
	if o.apiCaller {
		lctx, lcancel := s.timeout()
		n, _, err := s.c.Leader(lctx)
		lcancel()
		if err != nil {
			t.Fatalf("%v", err)
		}
		s.apiNode = n
		cfg.APIFor = map[string]string{apiName: n.APIAddr}
	}
	s.rec = workload.NewRecorder(name, o.seed, s.keys)
	w, err := workload.Start(cfg, s.rec)
	if err != nil {
		t.Fatalf("start workload: %v", err)
	}
	s.w = w
	t.Cleanup(func() {
		w.Stop()
		if t.Failed() && !s.finished {
			// Keep what was recorded for the post-mortem, without a final
			// state.
			if path, err := save(s.rec.History(checker.Final{}), nil); err == nil {
				s.say("FAULTS %s: failed before the check; partial history saved to %s", s.name, path)
			}
		}
	})
	s.progress(50)
	return s
}

// say logs a line and prints it, so it shows in `go test` output with or
// without -v.
func (s *scenario) say(format string, args ...any) {
	s.t.Helper()
	line := fmt.Sprintf(format, args...)
	s.t.Log(line)
	fmt.Println(line)
}

// fatalf fails the scenario with the cluster's state.
func (s *scenario) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\ncluster: %s", fmt.Sprintf(format, args...), s.state())
}

// state describes the cluster for failure messages.
func (s *scenario) state() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	st, err := s.c.Observe(ctx)
	fmt.Fprintf(&b, "leader=%q term=%d holder=%q err=%v", st.Leader, st.Term, st.TermHolder, err)
	wm, err := s.c.Watermark(ctx)
	fmt.Fprintf(&b, " watermark=%s err=%v", wm, err)
	n, err := s.c.Pending(ctx)
	fmt.Fprintf(&b, " pending=%d err=%v", n, err)
	for _, ms := range s.c.EtcdStatus(ctx) {
		fmt.Fprintf(&b, " %s(id=%x leader=%x err=%v)", ms.Member.Name, ms.ID, ms.Leader, ms.Err)
	}
	fmt.Fprintf(&b, " ok=%d (indexed %d) refused=%d unknown=%d", s.w.OK(), s.w.Indexed(), s.w.Refused(), s.w.Unknown())
	return b.String()
}

func (s *scenario) timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, recoverTimeout)
}

// progress waits until n more submissions are acknowledged and the last of
// them is applied: the cluster is making progress.
func (s *scenario) progress(n int64) {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	tok, err := s.w.WaitOK(ctx, n)
	if err != nil {
		s.fatalf("no progress: %v", err)
	}
	if err := s.c.WaitApplied(ctx, tok); err != nil {
		s.fatalf("no progress: %v", err)
	}
}

// leader returns the leading node.
func (s *scenario) leader() (*cluster.Node, election.Status) {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	n, st, err := s.c.Leader(ctx)
	if err != nil {
		s.fatalf("%v", err)
	}
	return n, st
}

// waitNewLeader waits until a node other than old leads with a newer term.
func (s *scenario) waitNewLeader(old string, term uint64) election.Status {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	st, err := s.c.WaitNewLeader(ctx, old, term)
	if err != nil {
		s.fatalf("%v", err)
	}
	s.t.Logf("new leader %s term %d", st.Leader, st.Term)
	return st
}

// fault records a fault injected now.
func (s *scenario) fault(kind, target, detail string) int {
	i := s.rec.Fault(kind, target, detail)
	s.mu.Lock()
	s.open[i] = true
	s.mu.Unlock()
	s.t.Logf("%.3fs fault #%d: %s %s %s", float64(s.rec.Now())/1e9, i, kind, target, detail)
	return i
}

// healed records that fault i was undone.
func (s *scenario) healed(i int) {
	s.mu.Lock()
	delete(s.open, i)
	s.mu.Unlock()
	s.rec.Healed(i)
	s.t.Logf("%.3fs healed #%d", float64(s.rec.Now())/1e9, i)
}

func (s *scenario) killNode(n *cluster.Node) int {
	i := s.fault("kill -9", n.ID, "")
	n.Kill()
	return i
}

func (s *scenario) stopNode(n *cluster.Node) int {
	i := s.fault("stop", n.ID, "SIGTERM")
	s.c.StopNode(n)
	return i
}

func (s *scenario) restartNode(n *cluster.Node, i int) {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	if err := s.c.RestartNode(ctx, n); err != nil {
		s.fatalf("%v", err)
	}
	s.healed(i)
}

func (s *scenario) pauseNode(n *cluster.Node) int {
	i := s.fault("SIGSTOP", n.ID, "")
	n.Pause()
	return i
}

func (s *scenario) resumeNode(n *cluster.Node, i int) {
	n.Resume()
	s.healed(i)
}

func (s *scenario) killMember(m *cluster.Member) int {
	i := s.fault("kill -9", "etcd "+m.Name, "")
	s.c.KillMember(m)
	return i
}

func (s *scenario) restartMember(m *cluster.Member, i int) {
	s.t.Helper()
	ctx, cancel := s.timeout()
	defer cancel()
	if err := s.c.RestartMember(ctx, m); err != nil {
		s.fatalf("%v", err)
	}
	if err := s.c.WaitEtcdHealthy(ctx); err != nil {
		s.fatalf("%v", err)
	}
	s.healed(i)
}

func (s *scenario) stopMemcached() int { return s.stopPoolServer(0) }

func (s *scenario) startMemcached(i int) { s.startPoolServer(0, i) }

// stopPoolServer kills memcached server p of the pool.
func (s *scenario) stopPoolServer(p int) int {
	s.mu.Lock()
	s.mcDown[p] = s.rec.Now()
	s.mu.Unlock()
	target := "memcached"
	if len(s.c.Pool) > 1 {
		target = fmt.Sprintf("memcached %d/%d", p, len(s.c.Pool))
	}
	i := s.fault("kill -9", target, "")
	s.c.Pool[p].Memcached.Stop()
	return i
}

// startPoolServer starts memcached server p again, empty, and records
// fault i healed.
func (s *scenario) startPoolServer(p, i int) {
	s.restartPoolServer(p)
	s.healed(i)
}

// restartPoolServer starts memcached server p again if it is down and
// records what it lost: every key with a single server, its own keys in a
// pool.
func (s *scenario) restartPoolServer(p int) {
	s.mu.Lock()
	down, ok := s.mcDown[p]
	delete(s.mcDown, p)
	s.mu.Unlock()
	if !ok {
		return
	}
	s.c.Pool[p].Memcached.Start()
	var lost []string
	if len(s.c.Pool) > 1 {
		lost = s.c.ServerKeys(p, s.keys)
		if len(lost) == 0 {
			// The server held none of the keys; an empty list would
			// mean every key.
			return
		}
	}
	s.rec.Wipe(down, s.rec.Now(), lost)
}

// healAll undoes every fault still in place: links healed, paused
// processes resumed, dead ones restarted, memcached started.
func (s *scenario) healAll() {
	s.t.Helper()
	for _, n := range s.c.Nodes {
		n.EtcdLink.Heal()
		for _, l := range n.MemcachedLinks {
			l.Heal()
		}
		n.EtcdLink.SetShape(proxy.Both, proxy.Shape{})
	}
	for _, ps := range s.c.Pool {
		ps.Proxy.Heal()
		ps.Proxy.SetShape(proxy.Both, proxy.Shape{})
	}
	s.c.HealPeers()
	s.c.ShapePeers(proxy.Shape{})
	if s.callerLink != nil {
		s.callerLink.Heal()
	}
	ctx, cancel := s.timeout()
	defer cancel()
	for _, m := range s.c.Members {
		m.Proc.Resume()
		if !cluster.Running(m.Proc) {
			if err := s.c.RestartMember(ctx, m); err != nil {
				s.fatalf("%v", err)
			}
		}
	}
	for _, n := range s.c.Nodes {
		n.Resume()
		if !cluster.Running(n.Process) {
			if err := s.c.RestartNode(ctx, n); err != nil {
				s.fatalf("%v", err)
			}
		}
	}
	for p := range s.c.Pool {
		s.restartPoolServer(p)
	}
	s.mu.Lock()
	var open []int
	for i := range s.open {
		open = append(open, i)
	}
	s.mu.Unlock()
	sort.Ints(open)
	for _, i := range open {
		s.healed(i)
	}
}

// finish stops the workload, heals everything, lets the leader drain,
// reads the final state and checks the history. A violation fails the test
// with the evidence and the path of the saved history.
func (s *scenario) finish() checker.Report {
	s.t.Helper()
	s.w.Stop()
	s.healAll()
	ctx, cancel := s.timeout()
	defer cancel()
	if err := s.c.WaitEtcdHealthy(ctx); err != nil {
		s.fatalf("after healing: %v", err)
	}
	if _, err := s.c.WaitLeader(ctx, nil); err != nil {
		s.fatalf("after healing: %v", err)
	}
	if err := s.c.WaitDrained(ctx); err != nil {
		s.t.Errorf("after healing: %v", err) // the checker reports what is left
	}
	final, err := s.c.FinalState(ctx, s.keys)
	if err != nil {
		s.fatalf("read final state: %v", err)
	}
	h := s.rec.History(final)
	for _, n := range s.c.Nodes {
		h.ReadBacks = append(h.ReadBacks, checker.ParseReadBacks(n.ID, n.Output())...)
	}
	if s.soak != nil {
		h.Soak = s.soak.finish()
		for _, line := range checker.SoakCurves(h.Soak) {
			s.say("SOAK %s", line)
		}
		if s.soak.threadsOnly {
			s.say("SOAK some node has no /metrics; its OS threads are recorded in place of its goroutines")
		}
	}
	rep := checker.Check(h)
	s.t.Logf("leader changes: %s", s.takeovers())
	for _, n := range s.c.Nodes {
		if strings.Contains(n.Output(), "WARNING: DATA RACE") {
			s.t.Errorf("%s: the race detector reported a data race (its output is printed below)", n.ID)
		}
	}
	s.finished = true
	s.say("FAULTS %-20s %s seed=%d elapsed=%s", s.name, rep.Summary(), h.Seed, time.Since(s.began).Round(100*time.Millisecond))
	rb := rep.Stats.ReadBacks
	suiteReadBacks.add(rb)
	s.say("READBACK %-20s ok=%d missing=%d stale=%d (delete window %d of at most %d) misplaced=%d: %s",
		s.name, rb.OK, rb.Missing, rb.Stale, rb.InWindow, rb.Bound, rb.Misplaced, rb.Nines())
	if rb.Judged == 0 {
		s.t.Errorf("%s: no read-back judged: the nodes read back every write, and their logs hold no %q line", s.name, "read back")
	}
	if len(rep.DeleteWindows) > 0 || len(rep.Notes) > 0 {
		s.t.Logf("%s", rep.Describe(10))
	}
	var path string
	if !rep.OK() || *flagKeep {
		if path, err = save(h, &rep); err != nil {
			s.t.Errorf("save history: %v", err)
		} else {
			s.say("FAULTS %-20s history saved to %s", s.name, path)
		}
	}
	if !rep.OK() {
		s.t.Errorf("%s: %d violations\n%s\nhistory: %s", s.name, len(rep.Violations), rep.Describe(10), path)
	}
	return rep
}

// save writes the history and its report as JSON to a new file under the
// system's temporary directory and returns its path.
func save(h *checker.History, rep *checker.Report) (string, error) {
	dir, err := os.MkdirTemp("", "faults-history-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, h.Scenario+".json")
	b, err := json.Marshal(struct {
		Report  *checker.Report  `json:"report,omitempty"`
		History *checker.History `json:"history"`
	}{rep, h})
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o644)
}

// hold waits d while a fault stays in place; this is the fault's length,
// not a wait for anything to happen.
func (s *scenario) hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// compactedReplay kills every node, runs pileUp while batches pile up,
// compacts etcd's history (past the watermark: no node applies) and starts
// the nodes again. Each node's standby then finds the history it would
// watch gone, and so does the leader: it reads the pending batches with a
// range read (pkg/applier's fallback). The cluster keeps a copy of the
// history for the final state (cluster.Compact).
func (s *scenario) compactedReplay(pileUp func()) {
	s.t.Helper()
	var faults []int
	for _, n := range s.c.Nodes {
		faults = append(faults, s.killNode(n))
	}
	pileUp()
	ctx, cancel := s.timeout()
	defer cancel()
	i := s.fault("compact", "etcd", "history compacted while no node runs")
	rev, err := s.c.Compact(ctx)
	if err != nil {
		s.fatalf("%v", err)
	}
	s.healed(i)
	s.t.Logf("etcd's history compacted at revision %d", rev)
	for j, n := range s.c.Nodes {
		s.restartNode(n, faults[j])
	}
}
