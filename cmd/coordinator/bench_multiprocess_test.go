package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// multi-process runs its caller processes as `coordinator bench worker`
// children of this executable, pointed at the etcd given with
// --endpoints, and reports the three variants, their ratios and targets as
// JSON, leaving nothing behind.
func TestBenchMultiProcessJSON(t *testing.T) {
	t.Setenv(cliEnv, "1") // for the child processes
	e := startEtcd(t)
	mc := testenv.StartMemcached(t)
	profile := filepath.Join(t.TempDir(), "node.prof")
	r := runCLI(t, nil, e.args("bench", "--memcached", mc.Addr, "--scenarios", "multi-process",
		"--processes", "2", "--process-concurrency", "2", "--duration", "200ms", "--keys", "20", "--names", "1",
		"--lease-ttl", "2s", "--cpuprofile-node", profile, "-o", "json")...)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Settings struct {
			Processes          int `json:"processes"`
			ProcessConcurrency int `json:"process_concurrency"`
		} `json:"settings"`
		Scenarios []struct {
			Name         string `json:"name"`
			Measurements []struct {
				What        string  `json:"what"`
				Concurrency int     `json:"concurrency"`
				Ops         int64   `json:"ops"`
				Errors      int64   `json:"errors"`
				OpsPerSec   float64 `json:"ops_per_sec"`
				P99Ms       float64 `json:"p99_ms"`
				CPU         *struct {
					PerOpMicros float64 `json:"per_op_us"`
					CallersSec  float64 `json:"callers_sec"`
					BenchSec    float64 `json:"bench_sec"`
				} `json:"cpu"`
			} `json:"measurements"`
			Ratios []struct {
				Name  string  `json:"name"`
				Value float64 `json:"value"`
			} `json:"ratios"`
		} `json:"scenarios"`
		Targets []struct {
			Name string `json:"name"`
			Got  string `json:"got"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if rep.Settings.Processes != 2 || rep.Settings.ProcessConcurrency != 2 {
		t.Errorf("settings: %+v", rep.Settings)
	}
	if len(rep.Scenarios) != 1 || rep.Scenarios[0].Name != "multi-process" {
		t.Fatalf("scenarios: %s", r.stdout)
	}
	sc := rep.Scenarios[0]
	if len(sc.Measurements) != 5 || len(sc.Ratios) != 9 {
		t.Fatalf("multi-process: %+v", sc)
	}
	for _, m := range sc.Measurements {
		if m.Concurrency != 4 || m.Ops <= 0 || m.Errors != 0 || m.OpsPerSec <= 0 || m.P99Ms <= 0 {
			t.Errorf("measurement %+v", m)
		}
		if m.CPU == nil || m.CPU.PerOpMicros <= 0 || m.CPU.CallersSec <= 0 || m.CPU.BenchSec <= 0 {
			t.Errorf("measurement %q: CPU %+v", m.What, m.CPU)
		}
	}
	for _, x := range sc.Ratios {
		if x.Value <= 0 {
			t.Errorf("ratio %q = %v", x.Name, x.Value)
		}
	}
	if len(rep.Targets) != 3 || !strings.Contains(rep.Targets[0].Got, "(2 processes × 2)") {
		t.Errorf("targets: %+v", rep.Targets)
	}
	if fi, err := os.Stat(profile); err != nil || fi.Size() == 0 {
		t.Errorf("node CPU profile: %v", err)
	}
	if s := e.snapshot(t); len(s.keys) != 0 || s.leases != 0 {
		t.Errorf("left behind: keys %q, %d leases", s.keys, s.leases)
	}
}

// The hidden worker subcommand refuses a spec it cannot read.
func TestBenchWorkerRefusesBadSpec(t *testing.T) {
	r := runCLI(t, strings.NewReader("not json\n"), "bench", "worker")
	if r.code == 0 || !strings.Contains(r.stderr, "bench worker: read the spec") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// Bad shapes of the multi-process scenario exit 2 with a usage line,
// before anything starts.
func TestBenchMultiProcessUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--processes", "0"},
		{"bench", "--processes", "1025"},
		{"bench", "--process-concurrency", "0"},
		{"bench", "--process-concurrency", "257"},
		{"bench", "worker", "extra"},
		{"bench", "--cpuprofile", "a.prof", "--cpuprofile-node", "b.prof"},
		{"bench", "--etcd-pid", "-1"},
	} {
		r := runCLI(t, nil, append([]string{"--endpoints", "http://127.0.0.1:1"}, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
}
