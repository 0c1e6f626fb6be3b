package pyclient

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// benchResult is one measurement: submissions per second of one session
// whose workers each submit one set at a time and wait for its token.
type benchResult struct {
	Submissions int     `json:"submissions"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
}

// benchCase is what one row of the report measures.
type benchCase struct {
	client  string // "go", "threads" or "asyncio"
	workers int
}

func (c benchCase) String() string {
	switch c.client {
	case "go":
		return fmt.Sprintf("Go pkg/apiclient Session, %d goroutine(s)", c.workers)
	case "threads":
		return fmt.Sprintf("Python Session, %d thread(s)", c.workers)
	}
	return fmt.Sprintf("Python AsyncSession, %d asyncio task(s)", c.workers)
}

// TestPythonSessionThroughput measures the submissions per second of a
// Python session through a node's API, with 1 and 16 threads and with 16
// asyncio tasks, beside the Go pkg/apiclient session with 1 and 16
// goroutines, against the same node in the same run (BENCHMARKS.md). It is
// run on demand, not in CI:
//
//	COORDINATOR_PYBENCH=5s go test -count=1 -run TestPythonSessionThroughput -v ./integration/pyclient
//
// COORDINATOR_PYBENCH is each measurement's duration;
// COORDINATOR_PYBENCH_REPEAT (default 3) how many times each runs, in
// reverse order every other time; the report gives the median rate's run.
// Run it without -race: the node is built with the race detector otherwise.
func TestPythonSessionThroughput(t *testing.T) {
	spec := os.Getenv("COORDINATOR_PYBENCH")
	if spec == "" {
		t.Skip("on demand: COORDINATOR_PYBENCH=5s go test -count=1 -run TestPythonSessionThroughput -v ./integration/pyclient")
	}
	d, err := time.ParseDuration(spec)
	if err != nil || d <= 0 {
		t.Fatalf("COORDINATOR_PYBENCH=%q: want a duration such as 5s", spec)
	}
	repeat := 3
	if r := os.Getenv("COORDINATOR_PYBENCH_REPEAT"); r != "" {
		if repeat, err = strconv.Atoi(r); err != nil || repeat < 1 {
			t.Fatalf("COORDINATOR_PYBENCH_REPEAT=%q: want a positive count", r)
		}
	}
	py := requirePython(t)
	site := install(t, py)
	mc := testenv.StartMemcached(t, "-m", "1024", "-t", "2")
	addr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	// The node runs its own embedded etcd, in a process of its own, as a
	// deployment's node and etcd are apart from its callers.
	node := harness.StartNode(t, harness.NodeOptions{ID: "bench", Memcached: mc.Addr, Extra: []string{"--api-listen", addr}})
	ctx := testenv.Ctx(t, time.Duration(repeat)*(10*d+2*time.Minute))
	if err := node.WaitOutput(ctx, "became leader"); err != nil {
		t.Fatal(err)
	}
	cases := []benchCase{{"go", 1}, {"go", 16}, {"threads", 1}, {"threads", 16}, {"asyncio", 16}}
	results := make(map[benchCase][]benchResult)
	for r := range repeat {
		order := slices.Clone(cases)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for i, c := range order {
			name := fmt.Sprintf("bench-%d-%d", r, i)
			var res benchResult
			if c.client == "go" {
				res = goSessionThroughput(t, ctx, addr, name, c.workers, d)
			} else {
				res = pySessionThroughput(t, ctx, py, site, addr, name, c, d)
			}
			t.Logf("run %d: %s: %.0f submissions/s (p50 %.2f ms, p99 %.2f ms)", r+1, c, res.Rate, res.P50, res.P99)
			results[c] = append(results[c], res)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| session (one node's API, %s per measurement, median of %d) | submissions/s | p50 ms | p99 ms | runs (submissions/s) |\n|---|---|---|---|---|\n", d, repeat)
	for _, c := range cases {
		rs := slices.Clone(results[c])
		slices.SortFunc(rs, func(x, y benchResult) int {
			switch {
			case x.Rate < y.Rate:
				return -1
			case x.Rate > y.Rate:
				return 1
			}
			return 0
		})
		m := rs[len(rs)/2]
		var runs []string
		for _, r := range results[c] {
			runs = append(runs, fmt.Sprintf("%.0f", r.Rate))
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %s |\n", c, m.Rate, m.P50, m.P99, strings.Join(runs, ", "))
	}
	t.Log(b.String())
}

// goSessionThroughput runs workers goroutines on one pkg/apiclient session
// for d.
func goSessionThroughput(t *testing.T, ctx context.Context, addr, name string, workers int, d time.Duration) benchResult {
	t.Helper()
	c, err := apiclient.New(apiclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession(ctx, name, apiclient.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	value := []byte(strings.Repeat("x", 100))
	for i := range 50 {
		if _, err := s.Submit(ctx, ops.Set(fmt.Sprintf("%s/warm/%d", name, i), value, 0)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  []time.Duration
		end  time.Time
		errs []error
	)
	start := time.Now()
	stopAt := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; ; i++ {
				now := time.Now()
				if !now.Before(stopAt) {
					break
				}
				if _, err := s.Submit(ctx, ops.Set(fmt.Sprintf("%s/%d/%d", name, w, i%1000), value, 0)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(now))
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			if now := time.Now(); now.After(end) {
				end = now
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("Go session: %d submissions failed, e.g. %v", len(errs), errs[0])
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	secs := end.Sub(start).Seconds()
	return benchResult{Submissions: len(lat), Seconds: secs, Rate: float64(len(lat)) / secs, P50: pct(0.5), P99: pct(0.99)}
}

// pySessionThroughput runs clients/python/bench/session_throughput.py.
func pySessionThroughput(t *testing.T, ctx context.Context, py, site, addr, name string, c benchCase, d time.Duration) benchResult {
	t.Helper()
	script := filepath.Join(repoRoot(), "clients", "python", "bench", "session_throughput.py")
	cmd := exec.CommandContext(ctx, py, script, "--addr", addr, "--name", name, "--mode", c.client,
		"--workers", strconv.Itoa(c.workers), "--duration", strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
	cmd.Env = append(pythonEnv(site), "PYTHONSAFEPATH=1")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s\n%s", c, err, out, stderr)
	}
	var res benchResult
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("%s: output %q: %v", c, out, err)
	}
	return res
}
