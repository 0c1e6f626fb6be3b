package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/metrics"
)

func TestNewValidates(t *testing.T) {
	for _, cfg := range []metrics.Config{{Stats: &applier.Stats{}}, {Election: &election.Observer{}}} {
		if _, err := metrics.New(cfg); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("New(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
}

// Values are read from the node's state when scraped; two nodes' registries
// do not clash; every coordinator metric has HELP text.
func TestValuesFromState(t *testing.T) {
	st := &applier.Stats{}
	m, err := metrics.New(metrics.Config{NodeID: "n1", Election: &election.Observer{}, Stats: st,
		MemcachedServers: []string{"mc-1:11211", "mc-2:11211"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(metrics.Config{NodeID: "n2", Election: &election.Observer{}, Stats: &applier.Stats{}}); err != nil {
		t.Fatalf("a second node's metrics: %v", err)
	}
	st.Applied.Add(5)
	st.Fenced.Add(2)
	st.PendingBatches.Store(3)
	st.Watermark.Store(42)
	st.OldestPending.Store(time.Now().Add(-time.Minute).UnixNano())
	h := m.Hooks()
	h.Round(3, 20*time.Millisecond)
	h.Commit(3, 5*time.Millisecond)
	h.MemcachedError(fmt.Errorf("wrapped: %w", &memfence.ServerError{Server: "mc-1:11211", Err: memfence.ErrFenced}))
	h.MemcachedError(context.Canceled)
	// A read that failed at two servers counts at each.
	h.MemcachedError(errors.Join(&memfence.ServerError{Server: "mc-2:11211", Err: syscall.ECONNREFUSED},
		&memfence.ServerError{Server: "mc-3:11211", Err: syscall.ECONNREFUSED}))

	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	values := map[string]float64{}
	for _, f := range fams {
		got[f.GetName()] = true
		if ms := f.GetMetric(); len(ms) == 1 {
			values[f.GetName()] = ms[0].GetGauge().GetValue() + ms[0].GetCounter().GetValue()
		}
		if strings.HasPrefix(f.GetName(), "coordinator_") && len(f.GetHelp()) < 10 {
			t.Errorf("%s has no real HELP text: %q", f.GetName(), f.GetHelp())
		}
		switch f.GetName() {
		case "coordinator_round_duration_seconds", "coordinator_commit_duration_seconds":
			if n := f.GetMetric()[0].GetHistogram().GetSampleCount(); n != 1 {
				t.Errorf("%s count = %d, want 1", f.GetName(), n)
			}
		case "coordinator_oldest_pending_seconds":
			if v := f.GetMetric()[0].GetGauge().GetValue(); v < 59 || v > 120 {
				t.Errorf("oldest_pending_seconds = %v, want about 60", v)
			}
		case "coordinator_memcached_errors_total":
			// Every kind of each configured server from the start, and
			// each other server, or none, once counted.
			type series struct{ kind, server string }
			want := map[series]float64{
				{metrics.KindFenced, "mc-1:11211"}: 1, {metrics.KindCanceled, ""}: 1,
				{metrics.KindConnection, "mc-2:11211"}: 1, {metrics.KindConnection, "mc-3:11211"}: 1,
			}
			for _, mm := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range mm.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				k := series{labels["kind"], labels["server"]}
				if v := mm.GetCounter().GetValue(); v != want[k] {
					t.Errorf("memcached_errors_total{kind=%q,server=%q} = %v, want %v", k.kind, k.server, v, want[k])
				}
			}
			if n := len(f.GetMetric()); n != 2*len(metrics.Kinds)+2 {
				t.Errorf("memcached_errors_total has %d series, want %d (every kind of 2 servers, 2 more)", n, 2*len(metrics.Kinds)+2)
			}
		}
	}
	for name, want := range map[string]float64{
		"coordinator_applied_operations_total": 5, "coordinator_fenced_writes_total": 2, "coordinator_pending_batches": 3,
		"coordinator_applied_watermark": 42, "coordinator_is_leader": 0, "coordinator_node_info": 1,
	} {
		if v, ok := values[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	for _, n := range []string{"go_goroutines", "process_cpu_seconds_total", "coordinator_campaign_state", "coordinator_term"} {
		if !got[n] {
			t.Errorf("no %s", n)
		}
	}
}

// Real failures of real connections are classified.
func TestErrorKind(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := ln.Addr().String() // accepts, never answers
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	mcRefused := memcache.New(refused)
	_, errRefused := mcRefused.Get("k")
	mcSilent := memcache.New(silent)
	mcSilent.Timeout = 50 * time.Millisecond
	_, errTimeout := mcSilent.Get("k")
	mcRefused.Close()
	mcSilent.Close()
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("memfence: %w: key", memfence.ErrFenced), metrics.KindFenced},
		{fmt.Errorf("%w: too large", memfence.ErrRejected), metrics.KindRejected},
		{memfence.ErrContended, metrics.KindContended},
		{fmt.Errorf("memfence: %w", context.Canceled), metrics.KindCanceled},
		{fmt.Errorf("memfence: %w", context.DeadlineExceeded), metrics.KindCanceled},
		{errTimeout, metrics.KindTimeout},
		{errRefused, metrics.KindConnection},
		{errors.New("memfence: memcached: SERVER_ERROR out of memory storing object"), metrics.KindServerError},
		{errors.New("something else"), metrics.KindOther},
	} {
		if got := metrics.ErrorKind(c.err); got != c.want {
			t.Errorf("ErrorKind(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// The restart counters are read from memfence.Stats when scraped, the
// restarts by server (every configured server from the start), and absent
// without it.
func TestMemcachedRestartCounters(t *testing.T) {
	ms := &memfence.Stats{}
	m, err := metrics.New(metrics.Config{NodeID: "n", Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: ms,
		MemcachedServers: []string{"mc-1:11211", "mc-2:11211"}})
	if err != nil {
		t.Fatal(err)
	}
	restarts := func() map[string]float64 {
		t.Helper()
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range fams {
			if f.GetName() != "coordinator_memcached_restarts_total" {
				continue
			}
			for _, mm := range f.GetMetric() {
				if l := mm.GetLabel(); len(l) != 1 || l[0].GetName() != "server" {
					t.Fatalf("restarts_total labels %v, want server only", l)
				}
				out[mm.GetLabel()[0].GetValue()] = mm.GetCounter().GetValue()
			}
		}
		return out
	}
	if got := restarts(); len(got) != 2 || got["mc-1:11211"] != 0 || got["mc-2:11211"] != 0 {
		t.Fatalf("restarts before any: %v, want both servers at 0", got)
	}
	ms.AddRestart("mc-2:11211")
	ms.AddRestart("mc-2:11211")
	ms.RestartChecks.Add(7)
	if got := restarts(); len(got) != 2 || got["mc-1:11211"] != 0 || got["mc-2:11211"] != 2 {
		t.Fatalf("restarts %v, want mc-2:11211 at 2", got)
	}
	if v := gather(t, m)["coordinator_memcached_restart_checks_total"]; v != 7 {
		t.Fatalf("checks %v, want 7", v)
	}
	ms.AddRestart("mc-3:11211") // a server of a later topology
	if got := restarts(); len(got) != 3 || got["mc-3:11211"] != 1 || ms.Restarts.Load() != 3 {
		t.Fatalf("restarts after one more = %v (total %d), want mc-3:11211 at 1 and 3 in all", got, ms.Restarts.Load())
	}
	bare, err := metrics.New(metrics.Config{NodeID: "n", Election: &election.Observer{}, Stats: &applier.Stats{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := gather(t, bare)["coordinator_memcached_restarts_total"]; ok {
		t.Fatal("restart counters without memfence.Stats")
	}
}

// coordinator_api_insecure_listener follows the health configuration: 1
// for a node whose API listens beyond loopback without client
// certificates, 0 otherwise, and absent without health.
func TestAPIInsecureListenerGauge(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		h, err := health.New(health.Config{
			Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: []string{"127.0.0.1:1"},
			APIInsecureListener: insecure,
		})
		if err != nil {
			t.Fatal(err)
		}
		m, err := metrics.New(metrics.Config{NodeID: "n", Election: &election.Observer{}, Stats: &applier.Stats{}, Health: h})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := gather(t, m)["coordinator_api_insecure_listener"]
		if want := map[bool]float64{false: 0, true: 1}[insecure]; !ok || v != want {
			t.Errorf("insecure=%v: gauge %v (present %v), want %v", insecure, v, ok, want)
		}
	}
	bare, err := metrics.New(metrics.Config{NodeID: "n", Election: &election.Observer{}, Stats: &applier.Stats{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := gather(t, bare)["coordinator_api_insecure_listener"]; ok {
		t.Fatal("coordinator_api_insecure_listener without health")
	}
}

// gather returns the value of every single-series metric of m.
func gather(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, f := range fams {
		if ms := f.GetMetric(); len(ms) == 1 {
			values[f.GetName()] = ms[0].GetGauge().GetValue() + ms[0].GetCounter().GetValue()
		}
	}
	return values
}
