package bench_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/internal/bench"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// nodeEnv makes the test binary act as `coordinator serve` when it is run
// as a node by the failover and memory scenarios, and workerEnv as a
// caller process of the multi-process scenario.
const (
	nodeEnv   = "COORDINATOR_BENCH_TEST_NODE"
	workerEnv = "COORDINATOR_BENCH_TEST_WORKER"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeEnv) == "1" {
		os.Exit(serveMain(os.Args[1:]))
	}
	if os.Getenv(workerEnv) == "1" {
		if err := bench.WorkerMain(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testenv.Main(m)
}

// serveMain is a minimal `coordinator serve --endpoints ...`: the flags the
// bench passes, SIGTERM for a graceful stop.
func serveMain(args []string) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: serve --endpoints ...")
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "", "")
	ns := fs.String("namespace", "", "")
	mc := fs.String("memcached", "", "")
	id := fs.String("node-id", "", "")
	ttl := fs.Duration("lease-ttl", 2*time.Second, "")
	fs.String("log-level", "warn", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err = node.Run(ctx, node.Config{
		Etcd: cli, Layout: keyspace.MustNew(*ns), NodeID: *id, LeaseTTL: *ttl, Memcached: strings.Split(*mc, ","),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// serveChild runs this test binary as a node.
func serveChild(t *testing.T) func(args []string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return func(args []string) *exec.Cmd {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), nodeEnv+"=1")
		return cmd
	}
}

// workerChild runs this test binary as a caller process.
func workerChild(t *testing.T) func() *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return func() *exec.Cmd {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), workerEnv+"=1")
		return cmd
	}
}

// tinyConfig is a run of scenarios small enough for CI.
func tinyConfig(t *testing.T, endpoints []string, mc string, progress *testenv.SyncBuffer, scenarios []string) bench.Config {
	return bench.Config{
		Endpoints: endpoints, Memcached: []string{mc}, Scenarios: scenarios,
		Concurrency: []int{1, 4}, Duration: 100 * time.Millisecond, Keys: 50, Names: 4,
		Backlog: 200, MemoryBacklog: 200, Registrations: 200, LeaseTTL: 2 * time.Second, FailoverRounds: 1, Repeat: 2,
		Processes: 4, ProcessConcurrency: 2,
		Serve: serveChild(t), Worker: workerChild(t), Progress: progress,
	}
}

// The scenarios run in process: each reports positive rates and computes
// its ratios, and the run leaves no key behind.
func TestRunInProcessScenarios(t *testing.T) {
	t.Parallel()
	runAndCheck(t, []string{bench.ScenarioSubmit, bench.ScenarioEndToEnd, bench.ScenarioPeer, bench.ScenarioDrain}, 5)
}

// Failover runs nodes as child processes (this test binary acting as
// `coordinator serve`) and stops and kills them by pid.
func TestRunFailover(t *testing.T) {
	t.Parallel()
	runAndCheck(t, []string{bench.ScenarioFailover}, 2)
}

// Memory reads the resident memory of child processes.
func TestRunMemory(t *testing.T) {
	t.Parallel()
	runAndCheck(t, []string{bench.ScenarioMemory}, 1)
}

// Multi-process runs its callers as child processes (this test binary
// acting as `coordinator bench worker`), through the API, directly and as
// raw puts.
func TestRunMultiProcess(t *testing.T) {
	t.Parallel()
	runAndCheck(t, []string{bench.ScenarioMultiProcess}, 3)
}

// runAndCheck runs scenarios against a real etcd and memcached and checks
// the report has each of them, with positive rates, times and sizes, every
// ratio computed, the targets they bear on evaluated, and that no key,
// lease or memcached item of the run is left behind.
func runAndCheck(t *testing.T, scenarios []string, wantTargets int) {
	srv, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	ctx := testenv.Ctx(t, 3*time.Minute)
	progress := &testenv.SyncBuffer{}
	rep, err := bench.Run(ctx, tinyConfig(t, srv.Endpoints(), mc.Addr, progress, scenarios))
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	if !strings.HasPrefix(rep.Namespace, "bench-") {
		t.Errorf("namespace %q", rep.Namespace)
	}
	if rep.Environment.GoVersion == "" || rep.Environment.EtcdVersion == "" || rep.Environment.MemcachedVersion == "" || rep.Environment.EmbeddedEtcd {
		t.Errorf("environment %+v", rep.Environment)
	}
	wantRatios := map[string]int{
		bench.ScenarioSubmit: 6, bench.ScenarioEndToEnd: 6, bench.ScenarioPeer: 2,
		bench.ScenarioDrain: 1, bench.ScenarioFailover: 0, bench.ScenarioMemory: 1, bench.ScenarioMultiProcess: 9,
	}
	repeated := map[string]bool{
		bench.ScenarioSubmit: true, bench.ScenarioEndToEnd: true, bench.ScenarioPeer: true, bench.ScenarioMultiProcess: true,
	}
	var names []string
	for _, s := range rep.Scenarios {
		names = append(names, s.Name)
		if len(s.Measurements) == 0 {
			t.Errorf("%s: no measurements", s.Name)
		}
		for _, m := range s.Measurements {
			if m.Unit != "" && m.Value <= 0 {
				t.Errorf("%s: %q value %v %s", s.Name, m.What, m.Value, m.Unit)
			}
			// A multi-process measurement is a throughput with its CPU time.
			if (m.Unit == "" || m.CPU != nil) && (m.Ops <= 0 || m.OpsPerSec <= 0 || m.Seconds <= 0) {
				t.Errorf("%s: %q: %d ops, %v ops/s over %vs", s.Name, m.What, m.Ops, m.OpsPerSec, m.Seconds)
			}
			if c := m.CPU; c != nil && (c.CallersSec <= 0 || c.BenchSec <= 0 || c.PerOpMicros != m.Value ||
				c.CallersLifeSec < c.CallersSec || c.EtcdSec != 0) {
				t.Errorf("%s: %q: CPU %+v", s.Name, m.What, *c)
			}
			if s.Name == bench.ScenarioMultiProcess && m.CPU == nil {
				t.Errorf("%s: %q: no CPU time", s.Name, m.What)
			}
			if m.Errors != 0 {
				t.Errorf("%s: %q had %d errors: %s", s.Name, m.What, m.Errors, m.Note)
			}
		}
		if len(s.Ratios) != wantRatios[s.Name] {
			t.Errorf("%s: %d ratios, want %d: %+v", s.Name, len(s.Ratios), wantRatios[s.Name], s.Ratios)
		}
		for _, r := range s.Ratios {
			if r.Value <= 0 || math.IsInf(r.Value, 0) || math.IsNaN(r.Value) {
				t.Errorf("%s: ratio %q = %v", s.Name, r.Name, r.Value)
			}
			// Every comparison ran twice (Repeat 2), but for ours with a
			// leader applying, which runs once.
			wantRuns := 0
			if repeated[s.Name] && !strings.Contains(r.Name, "leader applying") {
				wantRuns = 2
			}
			if len(r.Runs) != wantRuns {
				t.Errorf("%s: ratio %q has %d runs %v, want %d", s.Name, r.Name, len(r.Runs), r.Runs, wantRuns)
			}
		}
	}
	if got, want := strings.Join(names, ","), strings.Join(scenarios, ","); got != want {
		t.Fatalf("scenarios %s, want %s", got, want)
	}
	if len(rep.Targets) != wantTargets {
		t.Errorf("%d targets evaluated, want %d: %+v", len(rep.Targets), wantTargets, rep.Targets)
	}
	for _, s := range scenarios {
		if !strings.Contains(progress.String(), "== "+s) {
			t.Errorf("no progress for %s:\n%s", s, progress.String())
		}
	}

	// Nothing left behind.
	resp, err := cli.Get(ctx, keyspace.Root+rep.Namespace+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d keys left under the run's namespace", resp.Count)
	}
	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(leases.Leases); n != 0 {
		t.Errorf("%d leases left", n)
	}
	m := memcache.New(mc.Addr)
	for _, fam := range []string{"k", "mutex", "lead", "gc"} {
		for i := range 50 {
			key := fmt.Sprintf("%s:%s%d", rep.Namespace, fam, i)
			if _, err := m.Get(key); !errors.Is(err, memcache.ErrCacheMiss) {
				t.Fatalf("memcached key %s left behind (%v)", key, err)
			}
		}
	}
}

func TestBadConfigIsRefusedBeforeAnythingStarts(t *testing.T) {
	ctx := testenv.Ctx(t, 10*time.Second)
	for _, cfg := range []bench.Config{
		{Scenarios: []string{"nope"}},
		{Scenarios: []string{"submit", "submit"}},
		{Concurrency: []int{0}},
		{Backlog: 2_000_000},
		{MemoryBacklog: 2_000_000},
		{LeaseTTL: 1500 * time.Millisecond},
		{Keys: -1},
		{Repeat: -1},
		{Repeat: 21},
		{Processes: -1},
		{Processes: 1025},
		{ProcessConcurrency: 257},
		{EtcdPID: -1},
	} {
		// No etcd runs at these endpoints: the config must be refused first.
		cfg.Endpoints = []string{"http://127.0.0.1:1"}
		if _, err := bench.Run(ctx, cfg); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("%+v: got %v, want ErrBadConfig", cfg, err)
		}
	}
}

// A caller process that dies before it is ready fails the scenario with
// its story, rather than hanging the run, and the run still cleans up.
func TestRunMultiProcessFailsOnADeadCallerProcess(t *testing.T) {
	t.Parallel()
	srv, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	ctx := testenv.Ctx(t, time.Minute)
	progress := &testenv.SyncBuffer{}
	cfg := tinyConfig(t, srv.Endpoints(), mc.Addr, progress, []string{bench.ScenarioMultiProcess})
	cfg.Worker = func() *exec.Cmd { return exec.Command("sh", "-c", "echo no spec for me >&2; exit 3") }
	rep, err := bench.Run(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "caller process") || !strings.Contains(err.Error(), "no spec for me") {
		t.Fatalf("run: %v, want the caller process's failure with its stderr", err)
	}
	if rep == nil || len(rep.Scenarios) != 1 || len(rep.Scenarios[0].Measurements) != 0 {
		t.Fatalf("report %+v", rep)
	}
	resp, err := cli.Get(ctx, keyspace.Root+rep.Namespace+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d keys left under the run's namespace", resp.Count)
	}
}
