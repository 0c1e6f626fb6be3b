package observability

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

func isOne(v float64) bool  { return v == 1 }
func isZero(v float64) bool { return v == 0 }

// register returns a caller of the namespace ns registered as name.
func register(t *testing.T, ctx context.Context, c *client.Client, name string) *client.Caller {
	t.Helper()
	caller, err := c.Register(ctx, name, client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return caller
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestMetricsTellLeaderFromStandby scrapes two nodes: the leader's
// is-leader is 1 and the standby's 0, the leader's applied operations,
// rounds and latencies grow with submissions, the standby follows the
// watermark, both are healthy and ready, and only the node started with
// pprof serves /debug/pprof/.
func TestMetricsTellLeaderFromStandby(t *testing.T) {
	const ns = "obs"
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew(ns)
	a := startMonitored(t, node.Config{Etcd: cli, Layout: layout, NodeID: "A", Memcached: []string{mc.Addr}}, false)
	st := waitLeader(t, cli, layout, "A")
	b := startMonitored(t, node.Config{Etcd: cli, Layout: layout, NodeID: "B", Memcached: []string{mc.Addr}}, true)

	waitMetric(t, a, "coordinator_is_leader", isOne, "is 1 on the leader")
	// The registry collects the two gauges concurrently, each reading
	// the election's state when it runs: a scrape as the node wins can
	// show is_leader at 1 and the campaign state not yet leading.
	sa := waitMetric(t, a, `coordinator_campaign_state{state="leading"}`, isOne, "is 1 on the leader")
	if got := sa.value(t, "coordinator_term"); got != float64(st.Term) {
		t.Errorf("A term = %v, want %d", got, st.Term)
	}
	sb := waitMetric(t, b, `coordinator_campaign_state{state="campaigning"}`, isOne, "is 1 on the standby")
	if got := sb.value(t, "coordinator_is_leader"); got != 0 {
		t.Errorf("B is_leader = %v, want 0", got)
	}
	if got := sb.value(t, `coordinator_node_info{node="B"}`); got != 1 {
		t.Errorf("B node_info = %v, want 1", got)
	}

	before := waitMetric(t, a, "coordinator_applier_running", isOne, "is 1").value(t, "coordinator_applied_operations_total")
	ctx := testenv.Ctx(t, 2*time.Minute)
	c := newClient(t, client.Config{Etcd: cli, Namespace: ns})
	caller := register(t, ctx, c, "svc")
	const n = 20
	var last client.Token
	for i := range n {
		tok, err := caller.Set(ctx, fmt.Sprintf("k%d", i), []byte("v"), 0)
		if err != nil {
			t.Fatal(err)
		}
		last = tok
	}
	if err := caller.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	sa = waitMetric(t, a, "coordinator_pending_batches", isZero, "is 0 once all is applied")
	if got := sa.value(t, "coordinator_applied_operations_total"); got < before+n {
		t.Errorf("A applied_operations_total = %v after %d sets, want at least %v", got, n, before+n)
	}
	for _, key := range []string{
		"coordinator_rounds_total", "coordinator_commits_total",
		"coordinator_round_duration_seconds_count", "coordinator_commit_duration_seconds_count",
	} {
		if got := sa.value(t, key); got < 1 {
			t.Errorf("A %s = %v, want at least 1", key, got)
		}
	}
	if wm := sa.value(t, "coordinator_applied_watermark"); wm < float64(last.Revision) {
		t.Errorf("A applied_watermark = %v, want at least %d", wm, last.Revision)
	}
	if rev := sa.value(t, "coordinator_etcd_revision"); rev < float64(last.Revision) {
		t.Errorf("A etcd_revision = %v, want at least %d", rev, last.Revision)
	}
	if age := sa.value(t, "coordinator_oldest_pending_seconds"); age != 0 {
		t.Errorf("A oldest_pending_seconds = %v with nothing pending", age)
	}
	sb = waitMetric(t, b, "coordinator_applied_watermark", func(v float64) bool { return v >= float64(last.Revision) },
		"reaches the last token on the standby")
	if got := sb.value(t, "coordinator_applied_operations_total"); got != 0 {
		t.Errorf("standby B applied_operations_total = %v, want 0", got)
	}

	for _, m := range []*monitored{a, b} {
		if body := waitStatus(t, m, "/readyz", http.StatusOK); !strings.Contains(body, "ok role:") {
			t.Errorf("%s /readyz body lacks its role: %q", m.ID, body)
		}
		if code, body := get(t, m.URL+"/healthz"); code != http.StatusOK || !strings.Contains(body, "ok etcd:") {
			t.Errorf("%s /healthz = %d %q", m.ID, code, body)
		}
	}
	if code, body := get(t, a.URL+"/metrics"); code != http.StatusOK || !strings.Contains(body, "# HELP coordinator_fenced_writes_total") ||
		!strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Errorf("A /metrics lacks HELP text or the standard collectors (status %d)", code)
	}
	if code, _ := get(t, a.URL+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("A (no pprof) /debug/pprof/ = %d, want 404", code)
	}
	if code, body := get(t, b.URL+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("B (pprof) /debug/pprof/ = %d, want 200 with the profiles", code)
	}
}

// TestReadyzFollowsMemcached stops the memcached process: both nodes'
// /readyz fail, saying memcached is unreachable, the leader counts failed
// writes by kind, and once memcached runs again both are ready and the
// operation accepted meanwhile is applied.
func TestReadyzFollowsMemcached(t *testing.T) {
	const ns = "ready"
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew(ns)
	a := startMonitored(t, node.Config{Etcd: cli, Layout: layout, NodeID: "A", Memcached: []string{mc.Addr}}, false)
	waitLeader(t, cli, layout, "A")
	b := startMonitored(t, node.Config{Etcd: cli, Layout: layout, NodeID: "B", Memcached: []string{mc.Addr}}, false)
	for _, m := range []*monitored{a, b} {
		waitStatus(t, m, "/readyz", http.StatusOK)
	}

	mc.Stop()
	for _, m := range []*monitored{a, b} {
		body := waitStatus(t, m, "/readyz", http.StatusServiceUnavailable)
		if !strings.Contains(body, "fail memcached: unreachable") {
			t.Errorf("%s /readyz body does not say memcached is unreachable: %q", m.ID, body)
		}
		if code, body := get(t, m.URL+"/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz = %d while only memcached is away: %q", m.ID, code, body)
		}
	}
	if got := scrapeMetrics(t, a).value(t, `coordinator_memcached_up{server="`+mc.Addr+`"}`); got != 0 {
		t.Errorf("A memcached_up = %v with memcached stopped", got)
	}
	ctx := testenv.Ctx(t, 2*time.Minute)
	c := newClient(t, client.Config{Etcd: cli, Namespace: ns})
	caller := register(t, ctx, c, "svc")
	tok, err := caller.Set(ctx, "k", []byte("v"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Every failure is counted under the server, by its kind.
	errorsOf := func(kind string) string {
		return `coordinator_memcached_errors_total{kind="` + kind + `",server="` + mc.Addr + `"}`
	}
	poll(t, "A counts failed memcached writes", func() (bool, string) {
		s := scrapeMetrics(t, a)
		sum := 0.0
		for k, v := range s {
			if strings.HasPrefix(k, "coordinator_memcached_errors_total{") {
				if !strings.HasSuffix(k, `server="`+mc.Addr+`"}`) {
					t.Errorf("%s = %v: not the server %s", k, v, mc.Addr)
				}
				sum += v
			}
		}
		return sum > 0 && s["coordinator_pending_batches"] >= 1, fmt.Sprintf("errors %v, pending %v", sum, s["coordinator_pending_batches"])
	})
	s := scrapeMetrics(t, a)
	t.Logf("memcached errors while it was stopped: connection %v, timeout %v, other %v",
		s[errorsOf("connection")], s[errorsOf("timeout")], s[errorsOf("other")])
	if got := s[errorsOf("other")]; got != 0 {
		t.Errorf("memcached errors of an unknown kind: %v", got)
	}
	if age := s["coordinator_oldest_pending_seconds"]; age <= 0 {
		t.Errorf("A oldest_pending_seconds = %v with a batch pending", age)
	}

	mc.Start()
	for _, m := range []*monitored{a, b} {
		waitStatus(t, m, "/readyz", http.StatusOK)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatalf("not applied after memcached came back: %v", err)
	}
}

// TestFencedWriteIsCounted makes node A a former leader that wakes up and
// writes: A is held in its write path, after its leadership check and
// before its memcached write, and cut off from etcd (a proxy on its etcd
// link blackholes it), so it learns nothing; its election lease is revoked
// from outside, B is elected and applies the same operation under its
// newer term; then A is let go, its lease deadline not passed yet. memfence
// refuses A's write, and A's fenced-writes counter, not B's, grows.
func TestFencedWriteIsCounted(t *testing.T) {
	const ns, hot = "fence", "hot"
	srv, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	layout := keyspace.MustNew(ns)
	px, err := proxy.New("127.0.0.1:0", strings.TrimPrefix(srv.Endpoints()[0], "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	cliA := testenv.Client(t, []string{"http://" + px.Addr()})

	var (
		mu       sync.Mutex
		armed    bool
		entered  = make(chan applier.Write, 1)
		release  = make(chan struct{})
		released bool
	)
	letGo := func() {
		mu.Lock()
		defer mu.Unlock()
		if !released {
			released = true
			close(release)
		}
	}
	hooks := applier.Hooks{BeforeWrite: func(_ context.Context, w applier.Write) {
		mu.Lock()
		hit := armed && w.Op.Key == hot
		if hit {
			armed = false
		}
		mu.Unlock()
		if hit {
			entered <- w
			<-release
		}
	}}
	// A's lease outlives the steps below by far: A must still think it
	// leads when it is let go.
	a := startMonitored(t, node.Config{
		Etcd: cliA, Layout: layout, NodeID: "A", Memcached: []string{mc.Addr}, Hooks: hooks, LeaseTTL: 10 * time.Second,
	}, false)
	// Registered after the node, so they run before it is stopped.
	t.Cleanup(px.HealReset)
	t.Cleanup(letGo)
	stA := waitLeader(t, cli, layout, "A")
	b := startMonitored(t, node.Config{Etcd: cli, Layout: layout, NodeID: "B", Memcached: []string{mc.Addr}}, false)
	waitMetric(t, b, `coordinator_campaign_state{state="campaigning"}`, isOne, "is 1 on the standby")

	ctx := testenv.Ctx(t, 2*time.Minute)
	c := newClient(t, client.Config{Etcd: cli, Namespace: ns})
	caller := register(t, ctx, c, "svc")
	tok, err := caller.Set(ctx, hot, []byte("v1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if got := scrapeMetrics(t, a).value(t, "coordinator_fenced_writes_total"); got != 0 {
		t.Fatalf("A fenced_writes_total = %v before any fencing", got)
	}

	mu.Lock()
	armed = true
	mu.Unlock()
	tok, err = caller.Set(ctx, hot, []byte("v2"), 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-entered:
		if w.Token != tok || w.Term != uint32(stA.Term) {
			t.Fatalf("A holds %+v, want token %s under term %d", w, tok, stA.Term)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A never came to write the hot key")
	}
	px.Blackhole()
	if _, err := cli.Revoke(ctx, electionLease(t, cli, layout, "A")); err != nil {
		t.Fatalf("revoke A's election lease: %v", err)
	}
	stB := waitLeader(t, cli, layout, "B")
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatalf("B did not apply: %v", err)
	}
	if sa := scrapeMetrics(t, a); sa.value(t, "coordinator_is_leader") != 1 || sa.value(t, "coordinator_lease_remaining_seconds") <= 0 {
		t.Fatalf("A no longer thinks it leads (is_leader %v, lease left %vs): it would not write",
			sa["coordinator_is_leader"], sa["coordinator_lease_remaining_seconds"])
	}

	letGo()
	sa := waitMetric(t, a, "coordinator_fenced_writes_total", func(v float64) bool { return v >= 1 }, "grows once A is let go")
	if got := sa.value(t, `coordinator_memcached_errors_total{kind="fenced",server="`+mc.Addr+`"}`); got < 1 {
		t.Errorf("A memcached_errors_total{kind=fenced} = %v, want at least 1", got)
	}
	// A's calls to etcd under way hold its leadership until they fail:
	// heal its link, closing them.
	px.HealReset()
	waitMetric(t, a, "coordinator_is_leader", isZero, "drops to 0 once A is fenced")
	sb := waitMetric(t, b, "coordinator_is_leader", isOne, "is 1 on the new leader")
	if got := sb.value(t, "coordinator_fenced_writes_total"); got != 0 {
		t.Errorf("B fenced_writes_total = %v, want 0", got)
	}
	if got := sb.value(t, "coordinator_term"); got != float64(stB.Term) {
		t.Errorf("B term = %v, want %d", got, stB.Term)
	}
}
