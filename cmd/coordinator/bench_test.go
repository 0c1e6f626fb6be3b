package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// cliEnv makes the test binary act as the coordinator CLI, so that bench can
// run it as `coordinator serve` child processes (it runs os.Executable()).
const cliEnv = "COORDINATOR_TEST_ACT_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// bench on the embedded default: its own etcd, an in-process node for
// submit, and `serve` child processes of this executable for failover,
// printed as JSON.
func TestBenchEmbeddedJSON(t *testing.T) {
	t.Setenv(cliEnv, "1") // for the child processes
	mc := testenv.StartMemcached(t)
	r := runCLI(t, nil, "bench", "--memcached", mc.Addr, "--scenarios", "submit,failover",
		"--concurrency", "2", "--duration", "50ms", "--keys", "20", "--names", "2",
		"--lease-ttl", "2s", "--failover-rounds", "1", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Namespace   string `json:"namespace"`
		Environment struct {
			EmbeddedEtcd bool `json:"embedded_etcd"`
		} `json:"environment"`
		Scenarios []struct {
			Name         string `json:"name"`
			Measurements []struct {
				What      string  `json:"what"`
				OpsPerSec float64 `json:"ops_per_sec"`
				MaxMs     float64 `json:"max_ms"`
			} `json:"measurements"`
			Ratios []struct {
				Name  string  `json:"name"`
				Value float64 `json:"value"`
			} `json:"ratios"`
		} `json:"scenarios"`
		Targets []struct {
			Name string `json:"name"`
			Met  bool   `json:"met"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if !rep.Environment.EmbeddedEtcd || !strings.HasPrefix(rep.Namespace, "bench-") {
		t.Errorf("report: %s", r.stdout)
	}
	if len(rep.Scenarios) != 2 || rep.Scenarios[0].Name != "submit" || rep.Scenarios[1].Name != "failover" {
		t.Fatalf("scenarios: %s", r.stdout)
	}
	sub := rep.Scenarios[0]
	if len(sub.Measurements) != 4 || len(sub.Ratios) != 3 {
		t.Fatalf("submit: %+v", sub)
	}
	for _, m := range sub.Measurements {
		if m.OpsPerSec <= 0 {
			t.Errorf("submit %q: %v ops/s", m.What, m.OpsPerSec)
		}
	}
	for _, x := range sub.Ratios {
		if x.Value <= 0 {
			t.Errorf("ratio %q = %v", x.Name, x.Value)
		}
	}
	if len(rep.Scenarios[1].Measurements) != 4 {
		t.Fatalf("failover: %+v", rep.Scenarios[1])
	}
	for _, m := range rep.Scenarios[1].Measurements {
		if m.MaxMs <= 0 {
			t.Errorf("failover %q: %v ms", m.What, m.MaxMs)
		}
	}
	if len(rep.Targets) != 3 {
		t.Errorf("targets: %+v", rep.Targets)
	}
	if !strings.Contains(r.stderr, "== failover") {
		t.Errorf("no progress on stderr:\n%s", r.stderr)
	}
}

// The table output has a block per scenario, its ratios and the targets.
func TestBenchTable(t *testing.T) {
	e := startEtcd(t)
	mc := testenv.StartMemcached(t)
	r := runCLI(t, nil, e.args("bench", "--memcached", mc.Addr, "--scenarios", "submit",
		"--concurrency", "1,2", "--duration", "50ms", "--keys", "10", "--names", "1", "--repeat", "3")...)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"coordinator bench", "repeat 3", "SUBMIT", "WHAT", "coordinator submit", "etcd put", "ours/etcd-put ops/s",
		"RUNS", "median of 3 runs by ops/s", "TARGETS", "(c=2, median of 3)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "embedded") {
		t.Errorf("ran on embedded etcd although --endpoints was given:\n%s", r.stdout)
	}
	if s := e.snapshot(t); len(s.keys) != 0 || s.leases != 0 {
		t.Errorf("left behind: keys %q, %d leases", s.keys, s.leases)
	}
}

// Misuse exits 2 with a usage line, before anything starts.
func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--scenarios", "nope"},
		{"bench", "--scenarios", ","},
		{"bench", "--concurrency", "x"},
		{"bench", "--concurrency", "0"},
		{"bench", "--duration", "0s"},
		{"bench", "--backlog", "2000000"},
		{"bench", "--memory-backlog", "2000000"},
		{"bench", "--lease-ttl", "1s"},
		{"bench", "--repeat", "0"},
		{"bench", "--repeat", "21"},
		{"bench", "-o", "yaml"},
		{"bench", "extra"},
	} {
		r := runCLI(t, nil, append([]string{"--endpoints", "http://127.0.0.1:1"}, args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
}
