package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
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
	m, err := metrics.New(metrics.Config{NodeID: "n1", Election: &election.Observer{}, Stats: st})
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
	h.MemcachedError(fmt.Errorf("wrapped: %w", memfence.ErrFenced))
	h.MemcachedError(context.Canceled)

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
			for _, mm := range f.GetMetric() {
				kind, v := mm.GetLabel()[0].GetValue(), mm.GetCounter().GetValue()
				want := map[string]float64{metrics.KindFenced: 1, metrics.KindCanceled: 1}[kind]
				if v != want {
					t.Errorf("memcached_errors_total{kind=%q} = %v, want %v", kind, v, want)
				}
			}
			if len(f.GetMetric()) != len(metrics.Kinds) {
				t.Errorf("memcached_errors_total has %d kinds, want all %d", len(f.GetMetric()), len(metrics.Kinds))
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

// The restart counters are read from memfence.Stats when scraped, and
// absent without it.
func TestMemcachedRestartCounters(t *testing.T) {
	ms := &memfence.Stats{}
	m, err := metrics.New(metrics.Config{NodeID: "n", Election: &election.Observer{}, Stats: &applier.Stats{}, Memcached: ms})
	if err != nil {
		t.Fatal(err)
	}
	ms.Restarts.Add(2)
	ms.RestartChecks.Add(7)
	values := gather(t, m)
	if values["coordinator_memcached_restarts_total"] != 2 || values["coordinator_memcached_restart_checks_total"] != 7 {
		t.Fatalf("restarts %v, checks %v; want 2 and 7", values["coordinator_memcached_restarts_total"], values["coordinator_memcached_restart_checks_total"])
	}
	ms.Restarts.Add(1)
	if v := gather(t, m)["coordinator_memcached_restarts_total"]; v != 3 {
		t.Fatalf("restarts after one more = %v, want 3", v)
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
