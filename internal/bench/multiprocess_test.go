package bench

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// The processes' results merge by their samples: the percentiles are those
// of every latency of every process, not an average of each process's,
// and the elapsed time is the longest.
func TestMergeResultsKeepsEverySample(t *testing.T) {
	fast := workerResult{Ops: 99, Elapsed: int64(time.Second)}
	for range 99 {
		fast.Latencies = append(fast.Latencies, int64(time.Millisecond))
	}
	slow := workerResult{Ops: 1, Errors: 2, FirstError: "boom", Elapsed: int64(1100 * time.Millisecond),
		Latencies: []int64{int64(500 * time.Millisecond)}}
	res := mergeResults([]workerResult{fast, slow})
	if res.ops != 100 || res.errors != 2 || res.firstErr == nil || res.firstErr.Error() != "boom" {
		t.Fatalf("merged %d ops, %d errors, first %v", res.ops, res.errors, res.firstErr)
	}
	if res.elapsed != 1100*time.Millisecond {
		t.Errorf("elapsed %s, want the longest, 1.1s", res.elapsed)
	}
	m := measurement("x", 2, res)
	// 100 samples: p99 is the 99th, a fast one; the maximum is the slow one.
	// Averaging each process's p99 would give 250.5 ms.
	if m.P99Ms != 1 || m.MaxMs != 500 || m.P50Ms != 1 {
		t.Errorf("p50 %v p99 %v max %v ms", m.P50Ms, m.P99Ms, m.MaxMs)
	}
	if want := 100 / 1.1; m.OpsPerSec < want-0.01 || m.OpsPerSec > want+0.01 {
		t.Errorf("%v ops/s, want %v", m.OpsPerSec, want)
	}
}

// A caller process gets the run's etcd security settings, the password
// included, in its spec (which travels on its stdin), and none for the
// etcd the run started itself.
func TestWorkerSpecCarriesTheSecuritySettings(t *testing.T) {
	sec := etcdconn.Security{CACert: "ca.pem", Cert: "c.pem", Key: "k.pem", Username: "bench", Password: "pw-secret"}
	env := &benchenv.Env{
		Namespace: "bench-x", Layout: keyspace.MustNew("bench-x"), Endpoints: []string{"https://etcd:2379"},
		Keys: []string{"bench-x:k0", "bench-x:k1"}, Value: []byte("v"),
	}
	cfg, err := Config{Security: sec, Keys: 2, Processes: 3, ProcessConcurrency: 5, Duration: time.Second}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{Env: env, cfg: cfg}
	spec := r.workerSpec(variantDirect, 2, "127.0.0.1:9")
	if spec.Security != sec || spec.Endpoints[0] != "https://etcd:2379" || spec.Namespace != "bench-x" {
		t.Errorf("spec %+v", spec)
	}
	if spec.Goroutines != 5 || spec.Index != 2 || spec.Duration != time.Second || spec.RawKeys != 2 ||
		spec.RawPrefix != env.Scratch(benchenv.RawPrefix) || spec.Name != "proc-direct-2" || spec.APIAddr != "127.0.0.1:9" {
		t.Errorf("spec %+v", spec)
	}
	env.Embedded = true
	if spec := r.workerSpec(variantPut, 0, ""); spec.Security != (etcdconn.Security{}) {
		t.Errorf("embedded etcd, yet the spec has security settings %v", spec.Security)
	}
}

// /proc/PID/stat's times are read past the command name, whatever it
// holds, in clock ticks of 10 ms.
func TestParseStatCPU(t *testing.T) {
	line := "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 9 0 100 1000 10 18446744073709551615\n"
	got, err := parseStatCPU(line)
	if err != nil || got != 1750*time.Millisecond {
		t.Fatalf("parseStatCPU = %v, %v; want 1.75s", got, err)
	}
	for _, bad := range []string{"", "4242 no parentheses", "4242 (x) S 1 2"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
	// This process, read both ways.
	proc, err := pidCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self := selfCPU(); self <= 0 || proc < 0 || (self-proc).Abs() > 100*time.Millisecond {
		t.Errorf("CPU time: getrusage %v, /proc %v", self, proc)
	}
}

// CPU per operation adds up every process counted; the callers' whole
// lives are reported beside it, not in it.
func TestCPUUsePerOp(t *testing.T) {
	u := CPUUse{CallersSec: 1.5, BenchSec: 0.4, EtcdSec: 0.1, CallersLifeSec: 9}
	u.perOp(10_000)
	if u.PerOpMicros != 200 {
		t.Errorf("%v µs/op, want 200", u.PerOpMicros)
	}
	if d := u.describe(); !strings.Contains(d, "CPU 200 µs/op") || !strings.Contains(d, "etcd process 0.10s") {
		t.Errorf("describe: %s", d)
	}
	var none CPUUse
	none.perOp(0)
	if none.PerOpMicros != 0 {
		t.Errorf("no operations: %v µs/op", none.PerOpMicros)
	}
}

// The node profiles of the API measurements' runs go to FILE, FILE.2, ...
func TestProfilePaths(t *testing.T) {
	dir := t.TempDir()
	got := profilePaths(filepath.Join(dir, "node.prof"), 3)
	want := []string{filepath.Join(dir, "node.prof"), filepath.Join(dir, "node.prof.2"), filepath.Join(dir, "node.prof.3")}
	if !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}

// EtcdPID names the process of an etcd given with Endpoints.
func TestEtcdPIDNeedsEndpoints(t *testing.T) {
	err := Config{EtcdPID: 42}.Validate()
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "EtcdPID" {
		t.Errorf("EtcdPID without Endpoints: %v", err)
	}
	if err := (Config{EtcdPID: 42, Endpoints: []string{"http://127.0.0.1:1"}}).Validate(); err != nil {
		t.Errorf("EtcdPID with Endpoints: %v", err)
	}
}
