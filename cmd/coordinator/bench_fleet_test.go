package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// fleetReport is the part of bench's JSON the fleet tests read.
type fleetReport struct {
	Settings struct {
		FleetIdle   []int   `json:"fleet_idle"`
		FleetTTLSec float64 `json:"fleet_ttl_sec"`
	} `json:"settings"`
	Scenarios []struct {
		Name         string `json:"name"`
		Measurements []struct {
			What      string  `json:"what"`
			Ops       int64   `json:"ops"`
			Errors    int64   `json:"errors"`
			OpsPerSec float64 `json:"ops_per_sec"`
			P99Ms     float64 `json:"p99_ms"`
			Value     float64 `json:"value"`
			Unit      string  `json:"unit"`
			Note      string  `json:"note"`
		} `json:"measurements"`
		Ratios []struct {
			Name  string  `json:"name"`
			Value float64 `json:"value"`
		} `json:"ratios"`
	} `json:"scenarios"`
	Targets []struct {
		Name string `json:"name"`
		Got  string `json:"got"`
		Met  bool   `json:"met"`
	} `json:"targets"`
}

// runFleet runs the fleet scenario with a handful of idle callers and a
// short TTL (its idle window is two thirds of it) and returns its report,
// having checked what every run must have: the phase's measurements, none
// with errors, both ratios, the three targets and no fleet process left.
func runFleet(t *testing.T, args ...string) (fleetReport, []string) {
	t.Helper()
	t.Setenv(cliEnv, "1") // for the child processes
	mc := testenv.StartMemcached(t)
	args = append(args, "bench", "--memcached", mc.Addr, "--scenarios", "fleet", "--fleet-idle", "6",
		"--fleet-ttl", "3s", "--duration", "200ms", "--keys", "20", "--names", "1", "--lease-ttl", "2s", "-o", "json")
	r := runCLI(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var rep fleetReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if len(rep.Settings.FleetIdle) != 1 || rep.Settings.FleetIdle[0] != 6 || rep.Settings.FleetTTLSec != 3 {
		t.Errorf("settings %+v", rep.Settings)
	}
	if len(rep.Scenarios) != 1 || rep.Scenarios[0].Name != "fleet" {
		t.Fatalf("scenarios: %s", r.stdout)
	}
	sc := rep.Scenarios[0]
	var whats []string
	for _, m := range sc.Measurements {
		whats = append(whats, m.What)
		if m.Errors != 0 {
			t.Errorf("%q: %d errors: %s", m.What, m.Errors, m.Note)
		}
		if strings.HasPrefix(m.What, "active") && (m.Ops <= 0 || m.OpsPerSec <= 0 || m.P99Ms <= 0) {
			t.Errorf("active callers: %+v", m)
		}
	}
	for _, want := range []string{
		"active callers through the API, none idle (paired with 6)",
		"active callers through the API, 6 idle",
		"registering 6 idle callers (3 API, 3 direct)",
		"etcd lease keep-alive requests/s, 6 idle",
		"node RSS per idle API caller, 6 idle",
		"node goroutines per idle API caller, 6 idle",
		"etcd db size in use per registration, 6 idle",
	} {
		found := false
		for _, w := range whats {
			found = found || w == want
		}
		if !found {
			t.Errorf("no %q in %q", want, whats)
		}
	}
	for _, m := range sc.Measurements {
		// Three callers hold a stream each through the node, each with
		// goroutines of its own there; every lease is kept alive.
		switch m.What {
		case "node goroutines per idle API caller, 6 idle":
			if m.Value < 1 {
				t.Errorf("%q = %v", m.What, m.Value)
			}
		case "etcd lease keep-alive requests/s, 6 idle":
			if m.Value <= 0 || m.Ops <= 0 {
				t.Errorf("%q = %v (%d)", m.What, m.Value, m.Ops)
			}
		}
	}
	if len(sc.Ratios) != 2 || sc.Ratios[0].Value <= 0 || sc.Ratios[1].Value <= 0 {
		t.Errorf("ratios %+v", sc.Ratios)
	}
	if len(rep.Targets) != 3 || rep.Targets[2].Name != "fleet: errors" || !rep.Targets[2].Met {
		t.Errorf("targets %+v", rep.Targets)
	}
	if ps := fleetProcesses(t); len(ps) != 0 {
		t.Errorf("fleet processes left running: %q", ps)
	}
	return rep, whats
}

// bench --scenarios fleet on the embedded default runs etcd in a process of
// its own (`bench fleet-worker`), so that etcd's memory per registration
// is measured too.
func TestBenchFleetJSON(t *testing.T) {
	_, whats := runFleet(t)
	found := false
	for _, w := range whats {
		found = found || w == "etcd RSS per registration, 6 idle"
	}
	if !found {
		t.Errorf("no etcd RSS with etcd in a process of its own: %q", whats)
	}
}

// Pointed at an etcd with --endpoints, the fleet runs there, in the run's
// namespace, and leaves nothing behind; etcd's memory is not its own
// process's then and is not reported.
func TestBenchFleetOnGivenEtcd(t *testing.T) {
	e := startEtcd(t)
	_, whats := runFleet(t, e.args()...)
	for _, w := range whats {
		if strings.HasPrefix(w, "etcd RSS") {
			t.Errorf("etcd RSS reported for an etcd of unknown process: %q", w)
		}
	}
	if s := e.snapshot(t); len(s.keys) != 0 || s.leases != 0 {
		t.Errorf("left behind: keys %q, %d leases", s.keys, s.leases)
	}
}

// Bad shapes of the fleet scenario exit 2 with a usage line, before
// anything starts.
func TestBenchFleetUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--fleet-idle", "x"},
		{"bench", "--fleet-idle", "0"},
		{"bench", "--fleet-idle", "10000,1000"},
		{"bench", "--fleet-idle", "100001"},
		{"bench", "--fleet-ttl", "1s"},
		{"bench", "fleet-worker", "extra"},
	} {
		r := runCLI(t, nil, append([]string{"--endpoints", "http://127.0.0.1:1"}, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
}

// The hidden fleet-worker subcommand refuses a spec it cannot read.
func TestBenchFleetWorkerRefusesBadSpec(t *testing.T) {
	r := runCLI(t, strings.NewReader("not json\n"), "bench", "fleet-worker")
	if r.code == 0 || !strings.Contains(r.stderr, "bench fleet-worker: read the spec") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// fleetProcesses lists the processes of this test's children that run
// `bench fleet-worker` or `serve` still.
func fleetProcesses(t *testing.T) []string {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// The parent pid is the second field after the command, which is
		// in parentheses and may hold spaces.
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != self {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		line := strings.Join(strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00"), " ")
		if strings.Contains(line, "fleet-worker") || strings.Contains(line, " serve ") {
			out = append(out, d+": "+line)
		}
	}
	return out
}
