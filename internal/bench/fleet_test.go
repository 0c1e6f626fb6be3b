package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/config"
)

// Idle registrations are split half through the API (the odd one there)
// and half direct, each kind over as few processes as hold them, at
// least two, as evenly as can be.
func TestPlanFleetSpreadsTheRegistrations(t *testing.T) {
	for _, tc := range []struct {
		n           int
		api, direct []int
	}{
		{1, []int{1}, nil},
		{7, []int{2, 2}, []int{2, 1}},
		{1000, []int{250, 250}, []int{250, 250}},
		{10_000, []int{2500, 2500}, []int{2500, 2500}},
		{12_001, []int{2001, 2000, 2000}, []int{2000, 2000, 2000}},
	} {
		p := planFleet(tc.n)
		if !slices.Equal(p.APIProcs, tc.api) || !slices.Equal(p.DirectProcs, tc.direct) {
			t.Errorf("%d: API %v direct %v, want %v and %v", tc.n, p.APIProcs, p.DirectProcs, tc.api, tc.direct)
		}
		sum := func(xs []int) (s int) {
			for _, x := range xs {
				s += x
			}
			return s
		}
		if p.Idle != tc.n || p.API+p.Direct != tc.n || sum(p.APIProcs) != p.API || sum(p.DirectProcs) != p.Direct {
			t.Errorf("%d: plan %+v does not add up", tc.n, p)
		}
	}
}

// The node is given room for every registration and stream of the phase
// and rates no caller identity reaches, so that its limits are not what
// the scenario measures.
func TestFleetNodeArgsLiftTheLimits(t *testing.T) {
	flag := func(args []string, name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("no %s in %v", name, args)
		}
		return args[i+1]
	}
	addrs := fleetAddrs{API: "127.0.0.1:1", APIHTTP: "127.0.0.1:3", Metrics: "127.0.0.1:2"}
	small := fleetNodeArgs(addrs, planFleet(1000))
	big := fleetNodeArgs(addrs, planFleet(30_000))
	if got := flag(small, "--api-max-registrations"); got != strconv.Itoa(apiserver.DefaultMaxRegistrations) {
		t.Errorf("1000 idle: --api-max-registrations %s, want the default 10000", got)
	}
	if got := flag(big, "--api-max-streams"); got != "30128" {
		t.Errorf("30000 idle: --api-max-streams %s, want 2 × (15000 + 64)", got)
	}
	for _, f := range []string{"--api-register-rate", "--api-register-burst", "--api-call-rate", "--api-call-burst"} {
		if got := flag(big, f); got != "1000000000" {
			t.Errorf("%s %s", f, got)
		}
	}
	if flag(big, "--api-listen") != "127.0.0.1:1" || flag(big, "--http-listen") != "127.0.0.1:2" || flag(big, "--api-http-listen") != "127.0.0.1:3" {
		t.Errorf("listeners: %v", big)
	}
}

func TestFleetConfigIsValidated(t *testing.T) {
	c := Config{}.filled()
	if !slices.Equal(c.FleetIdle, []int{1000, 10_000}) || c.FleetTTL != 10*time.Second {
		t.Errorf("defaults: %v, %s", c.FleetIdle, c.FleetTTL)
	}
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{FleetIdle: []int{0}}, "FleetIdle"},
		{Config{FleetIdle: []int{100_001}}, "FleetIdle"},
		{Config{FleetIdle: []int{10, 5}}, "FleetIdle"},
		{Config{FleetIdle: []int{10, 10}}, "FleetIdle"},
		{Config{FleetTTL: time.Second}, "FleetTTL"},
		{Config{FleetTTL: 2500 * time.Millisecond}, "FleetTTL"},
		{Config{FleetTTL: 25 * time.Hour}, "FleetTTL"},
	} {
		var fe *config.FieldError
		if err := tc.cfg.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg.FleetIdle, err, tc.field)
		}
	}
	if err := (Config{FleetIdle: []int{1, 100_000}, FleetTTL: 30 * time.Second}).Validate(); err != nil {
		t.Error(err)
	}
}

// A Prometheus exposition's samples are summed by name and labels, label
// values with escapes and samples with timestamps included.
func TestParsePromText(t *testing.T) {
	const page = `# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
# TYPE grpc_server_msg_received_total counter
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 1234
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 7
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="other",grpc_type="bidi_stream"} 6 1700000000000

go_goroutines 12551
coordinator_api_limited_total{limit="rate"} 0
coordinator_api_limited_total{limit="streams"} 2
odd{a="x\"y,z}",b="\\"} 1.5e+06
`
	ps, err := parsePromText(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		match []string
		want  float64
		found bool
	}{
		{"grpc_server_msg_received_total", []string{"grpc_method", "LeaseKeepAlive"}, 1240, true},
		{"grpc_server_msg_received_total", []string{"grpc_method", "LeaseKeepAlive", "grpc_service", "other"}, 6, true},
		{"grpc_server_msg_received_total", nil, 1247, true},
		{"go_goroutines", nil, 12551, true},
		{"coordinator_api_limited_total", nil, 2, true},
		{"odd", []string{"a", `x"y,z}`, "b", `\`}, 1.5e6, true},
		{"absent", nil, 0, false},
		{"go_goroutines", []string{"x", "y"}, 0, false},
	} {
		got, found := ps.sum(tc.name, tc.match...)
		if got != tc.want || found != tc.found {
			t.Errorf("%s %v: %v %v, want %v %v", tc.name, tc.match, got, found, tc.want, tc.found)
		}
	}
	for _, bad := range []string{"novalue", `x{a="b"`, `x{a=b} 1`, "x 1 2 3", "x abc"} {
		if _, err := parsePromText(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestKeepAlivesExpected(t *testing.T) {
	// A lease of 10 s is kept alive every 3.33 s + 0.25 s on average.
	if got := keepAlivesExpected(1000, 0, 10*time.Second); math.Abs(got-279.07) > 0.01 {
		t.Errorf("1000 leases of 10s: %.2f/s", got)
	}
	if got := keepAlivesExpected(3000, 0, 30*time.Second); math.Abs(got-292.68) > 0.01 {
		t.Errorf("3000 leases of 30s: %.2f/s", got)
	}
	// Through a node, every 3.33 s.
	if got := keepAlivesExpected(0, 1000, 10*time.Second); math.Abs(got-300) > 0.01 {
		t.Errorf("1000 leases of 10s through a node: %.2f/s", got)
	}
}

// The idle window is whole renewal periods, at least two, at least the
// duration asked for.
func TestIdleWindowIsWholePeriods(t *testing.T) {
	for _, tc := range []struct{ d, ttl, want time.Duration }{
		{5 * time.Second, 10 * time.Second, 2 * 3583333333},
		{200 * time.Millisecond, 3 * time.Second, 2500 * time.Millisecond},
		{10 * time.Second, 3 * time.Second, 10 * time.Second},
		{11 * time.Second, 3 * time.Second, 10*time.Second + 1250*time.Millisecond},
	} {
		if got := idleWindow(tc.d, tc.ttl); got != tc.want {
			t.Errorf("idleWindow(%s, %s) = %s, want %s", tc.d, tc.ttl, got, tc.want)
		}
	}
}

// fakePhase is a phase with round numbers: 1000 idle, 500 through the API.
func fakePhase(basePs, activePs []float64) fleetPhase {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	p := fleetPhase{
		Plan: planFleet(1000),
		Before: fleetSample{NodeRSS: 30 * mib, NodeGoroutines: 40, NodeLive: 4 * mib, EtcdRSS: 30 * mib, EtcdLive: 10 * mib,
			DBSize: 1 << 20, DBInUse: 1 << 20},
		After: fleetSample{NodeRSS: 30*mib + 500*40*1024, NodeGoroutines: 40 + 500*5, NodeLive: 4*mib + 500*20*1024,
			EtcdRSS: 30*mib + 1000*6*1024, EtcdLive: 10*mib + 1000*2*1024, DBSize: 2 << 20, DBInUse: 1<<20 + 1000*300},
		Registered: 1000, RegElapsed: 500 * time.Millisecond,
		W0: fleetCounters{At: t0, EtcdKeepAlives: 100, EtcdRenewed: 100, EtcdCounted: true, NodeCPU: time.Second, EtcdCPU: time.Second},
		W1: fleetCounters{At: t0.Add(10 * time.Second), EtcdKeepAlives: 2900, EtcdRenewed: 2850, EtcdCounted: true,
			NodeKeepAlives: 1400, NodeCPU: 1500 * time.Millisecond, EtcdCPU: 2 * time.Second},
	}
	for range p.Registered {
		p.RegLatencies = append(p.RegLatencies, 20*time.Millisecond)
	}
	for _, x := range basePs {
		p.Base = append(p.Base, Measurement{What: "active callers through the API, none idle (paired with 1000)",
			Concurrency: fleetActiveCallers, Ops: 1000, OpsPerSec: 5000, P99Ms: x})
	}
	for _, x := range activePs {
		p.Active = append(p.Active, Measurement{What: "active callers through the API, 1000 idle",
			Concurrency: fleetActiveCallers, Ops: 1000, OpsPerSec: 4000, P99Ms: x})
	}
	return p
}

// The report of a phase: its per-caller figures are the differences from
// before the registrations, divided by the callers that caused them; its
// active callers are compared with its own runs with none idle.
func TestFleetResults(t *testing.T) {
	sr := &ScenarioReport{Name: ScenarioFleet}
	fleetResults(sr, []fleetPhase{fakePhase([]float64{10, 20, 30}, []float64{12, 30, 33})}, 10*time.Second)
	got := map[string]Measurement{}
	for _, m := range sr.Measurements {
		got[m.What] = m
	}
	want := map[string]float64{
		"node RSS per idle API caller, 1000 idle":         40,
		"node goroutines per idle API caller, 1000 idle":  5,
		"etcd RSS per registration, 1000 idle":            6,
		"etcd db size in use per registration, 1000 idle": 300,
		"etcd lease keep-alive requests/s, 1000 idle":     280,
	}
	for what, v := range want {
		m, ok := got[what]
		if !ok {
			t.Errorf("no %q in %v", what, sr.Measurements)
			continue
		}
		if math.Abs(m.Value-v) > 1e-9 {
			t.Errorf("%q = %v %s, want %v", what, m.Value, m.Unit, v)
		}
	}
	if m := got["node RSS per idle API caller, 1000 idle"]; !strings.Contains(m.Note, "20.0 KiB per caller") {
		t.Errorf("heap per caller missing: %s", m.Note)
	}
	if m := got["etcd RSS per registration, 1000 idle"]; !strings.Contains(m.Note, "2.0 KiB per registration") {
		t.Errorf("etcd heap per registration missing: %s", m.Note)
	}
	ka := got["etcd lease keep-alive requests/s, 1000 idle"]
	for _, s := range []string{"etcd renewed 275 leases/s", "290/s expected", "the 501 kept by etcd's client", "the 500 the node keeps", "140 keep-alive messages/s", "node 5%", "etcd 10%"} {
		if !strings.Contains(ka.Note, s) {
			t.Errorf("keep-alive note lacks %q: %s", s, ka.Note)
		}
	}
	reg := got["registering 1000 idle callers (500 API, 500 direct)"]
	if reg.OpsPerSec != 2000 || reg.P99Ms != 20 || reg.Errors != 0 {
		t.Errorf("registration %+v", reg)
	}
	// Medians by ops/s are the middle runs (every run has the same rate:
	// the first); ratios are paired by run, their median the value.
	if len(sr.Ratios) != 2 {
		t.Fatalf("ratios %+v", sr.Ratios)
	}
	p99 := sr.Ratios[0]
	if p99.Name != "active p99, 1000 idle / none" || p99.Value != 1.2 || !slices.Equal(p99.Runs, []float64{1.2, 1.5, 1.1}) {
		t.Errorf("p99 ratio %+v", p99)
	}
	if ops := sr.Ratios[1]; ops.Name != "active ops/s, 1000 idle / none" || ops.Value != 0.8 {
		t.Errorf("ops ratio %+v", ops)
	}
	ts := fleetTargets(&Report{Scenarios: []ScenarioReport{*sr}})
	if len(ts) != 3 {
		t.Fatalf("targets %+v", ts)
	}
	if ts[0].Met || ts[0].Got != "40.0 KiB (500 API callers)" {
		t.Errorf("memory target %+v", ts[0])
	}
	if !ts[1].Met || ts[1].Got != "1.20× (1000 idle / none)" {
		t.Errorf("p99 target %+v", ts[1])
	}
	if !ts[2].Met || ts[2].Got != "0" {
		t.Errorf("errors target %+v", ts[2])
	}
}

// Whatever went wrong with the idle callers or the limits counts against
// the errors target, and a phase that stopped early reports what it has.
func TestFleetErrorsCount(t *testing.T) {
	p := fakePhase([]float64{10}, []float64{12})
	p.RegErrors, p.Lost, p.UnregErrors, p.W1.Limited = 1, 2, 3, 4
	p.RegFirstErr, p.FirstLoss = "boom", "lease lost"
	p.Active[0].Errors = 5
	partial := fleetPhase{Plan: planFleet(10_000), Base: []Measurement{{What: "active callers through the API, none idle (paired with 10000)",
		Concurrency: fleetActiveCallers, Ops: 10, OpsPerSec: 10, P99Ms: 10}}}
	sr := &ScenarioReport{Name: ScenarioFleet}
	fleetResults(sr, []fleetPhase{p, partial}, 10*time.Second)
	ts := fleetTargets(&Report{Scenarios: []ScenarioReport{*sr}})
	last := ts[len(ts)-1]
	if last.Name != "fleet: errors" || last.Got != "15" || last.Met {
		t.Errorf("errors target %+v", last)
	}
	var reg Measurement
	for _, m := range sr.Measurements {
		if strings.HasPrefix(m.What, "registering") {
			reg = m
		}
	}
	if !strings.Contains(reg.Note, "first: boom; first: lease lost") {
		t.Errorf("note %q", reg.Note)
	}
	if n := len(sr.Measurements); n != 9 {
		t.Errorf("%d measurements, want the full phase's 8 and the partial one's baseline: %+v", n, sr.Measurements)
	}
}

// The worker's refusals are answered on its stdout, so that the run reports
// them with the process's story.
func TestFleetWorkerRefusesABadSpec(t *testing.T) {
	for _, spec := range []fleetSpec{
		{Role: "conductor"},
		{Role: fleetRoleAPI, APIAddr: "127.0.0.1:1"},
		{Role: fleetRoleActive, APIAddr: "127.0.0.1:1", Count: 1},
	} {
		in, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = FleetWorkerMain(context.Background(), bytes.NewReader(in), &out)
		var ready fleetReady
		if jerr := json.Unmarshal(out.Bytes(), &ready); err == nil || jerr != nil || ready.Error == "" {
			t.Errorf("%+v: %v, answered %q", spec, err, out.String())
		}
	}
}

func TestMergeFleetResults(t *testing.T) {
	var p fleetPhase
	mergeRegistered(&p, []fleetRegistered{
		{Registered: 2, Elapsed: int64(time.Second), Latencies: []int64{1, 2}},
		{Registered: 1, Errors: 1, FirstError: "no", Elapsed: int64(2 * time.Second), Latencies: []int64{3}},
	})
	if p.Registered != 3 || p.RegErrors != 1 || p.RegFirstErr != "no" || p.RegElapsed != 2*time.Second || len(p.RegLatencies) != 3 {
		t.Errorf("merged %+v", p)
	}
	m, late := mergeActive("x", []fleetActiveResult{
		{Ops: 2, Elapsed: int64(time.Second), Late: int64(time.Millisecond), Latencies: []int64{int64(time.Millisecond), int64(time.Millisecond)}},
		{Ops: 2, Errors: 1, FirstError: "e", Elapsed: int64(2 * time.Second), Latencies: []int64{int64(time.Millisecond), int64(9 * time.Millisecond)}},
	})
	if m.Ops != 4 || m.Errors != 1 || m.OpsPerSec != 2 || m.MaxMs != 9 || late != time.Millisecond || m.Concurrency != fleetActiveCallers {
		t.Errorf("merged %+v, late %s", m, late)
	}
}

func TestEachIndexCallsEveryIndexOnce(t *testing.T) {
	for _, tc := range []struct{ n, conc int }{{0, 4}, {1, 4}, {100, 7}, {5, 100}} {
		var mu sync.Mutex
		seen := map[int]int{}
		eachIndex(tc.n, tc.conc, func(i int) {
			mu.Lock()
			seen[i]++
			mu.Unlock()
		})
		if len(seen) != tc.n {
			t.Errorf("%+v: %d indices seen", tc, len(seen))
		}
		for i, k := range seen {
			if k != 1 || i < 0 || i >= tc.n {
				t.Errorf("%+v: index %d seen %d times", tc, i, k)
			}
		}
	}
}
