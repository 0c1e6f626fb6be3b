package bench

import (
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
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
