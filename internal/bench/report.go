package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
)

// Report is the outcome of a run. Its JSON form is the machine-readable
// output of `coordinator bench -o json`.
type Report struct {
	// Namespace is the namespace the run worked in (deleted afterwards).
	Namespace   string           `json:"namespace"`
	Environment Environment      `json:"environment"`
	Settings    Settings         `json:"settings"`
	Scenarios   []ScenarioReport `json:"scenarios"`
	// Targets are the performance targets (see BENCHMARKS.md) evaluated on this run;
	// only those whose scenarios ran are listed.
	Targets []Target `json:"targets"`
}

// Environment describes where the run took place.
type Environment struct {
	Date             time.Time `json:"date"`
	GoVersion        string    `json:"go_version"`
	EtcdVersion      string    `json:"etcd_version"`
	MemcachedVersion string    `json:"memcached_version"`
	EmbeddedEtcd     bool      `json:"embedded_etcd"`
	CPUs             int       `json:"cpus"`
	CPUModel         string    `json:"cpu_model,omitempty"`
	GOMAXPROCS       int       `json:"gomaxprocs"`
	// LoadAverage is /proc/loadavg's 1, 5 and 15 minute load at the start.
	LoadAverage string `json:"load_average,omitempty"`
}

// Settings are the parameters the run used.
type Settings struct {
	Scenarios      []string `json:"scenarios"`
	Concurrency    []int    `json:"concurrency"`
	ValueSize      int      `json:"value_size"`
	DurationSec    float64  `json:"duration_sec"`
	Keys           int      `json:"keys"`
	Names          int      `json:"names"`
	Backlog        int      `json:"backlog"`
	MemoryBacklog  int      `json:"memory_backlog"`
	Registrations  int      `json:"registrations"`
	LeaseTTLSec    float64  `json:"lease_ttl_sec"`
	FailoverRounds int      `json:"failover_rounds"`
	Repeat         int      `json:"repeat"`
	// Processes and ProcessConcurrency shape the multi-process scenario.
	Processes          int `json:"processes"`
	ProcessConcurrency int `json:"process_concurrency"`
	// FleetIdle are the fleet scenario's numbers of idle registrations and
	// FleetTTLSec their lease TTL.
	FleetIdle   []int   `json:"fleet_idle,omitempty"`
	FleetTTLSec float64 `json:"fleet_ttl_sec,omitempty"`
}

func settingsOf(c Config) Settings {
	return Settings{
		Scenarios: c.Scenarios, Concurrency: c.Concurrency, ValueSize: c.ValueSize,
		DurationSec: c.Duration.Seconds(), Keys: c.Keys, Names: c.Names, Backlog: c.Backlog, MemoryBacklog: c.MemoryBacklog,
		Registrations: c.Registrations, LeaseTTLSec: c.LeaseTTL.Seconds(), FailoverRounds: c.FailoverRounds,
		Repeat: c.Repeat, Processes: c.Processes, ProcessConcurrency: c.ProcessConcurrency,
		FleetIdle: c.FleetIdle, FleetTTLSec: c.FleetTTL.Seconds(),
	}
}

// ScenarioReport is what one scenario measured.
type ScenarioReport struct {
	Name string `json:"name"`
	// Seconds is how long the scenario took, setup included.
	Seconds      float64       `json:"seconds"`
	Measurements []Measurement `json:"measurements"`
	Ratios       []Ratio       `json:"ratios"`
	Notes        []string      `json:"notes,omitempty"`
}

// Measurement is one measured thing: a throughput with latencies, or a
// single value (a time, a memory size) in Value and Unit.
type Measurement struct {
	What        string  `json:"what"`
	Concurrency int     `json:"concurrency,omitempty"`
	Ops         int64   `json:"ops"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	Value       float64 `json:"value,omitempty"`
	Unit        string  `json:"unit,omitempty"`
	// CPU is what the measurement cost in CPU time, every process
	// involved counted (multi-process only; Value is then CPUUse.PerOpMicros).
	CPU  *CPUUse `json:"cpu,omitempty"`
	Note string  `json:"note,omitempty"`
	// RunsOpsPerSec is the throughput of every run, in the order they ran,
	// when the measurement was repeated (Config.Repeat); the other fields
	// are then the median run's, but Errors counts the errors of every run.
	RunsOpsPerSec []float64 `json:"runs_ops_per_sec,omitempty"`
}

// Ratio compares the coordinator with a baseline: Value is ours divided by
// the baseline's, for the metric named.
type Ratio struct {
	Name        string  `json:"name"`
	Concurrency int     `json:"concurrency,omitempty"`
	Value       float64 `json:"value"`
	// Runs is the ratio of every run, ours and the baseline paired in the
	// order they ran, when the comparison was repeated (Config.Repeat);
	// Value is then their median.
	Runs []float64 `json:"runs,omitempty"`
}

// Target is one of the performance targets and whether this run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Names of the ratios the targets read.
const (
	ratioSubmitPut = "ours/etcd-put ops/s"
	// ratioSubmitApplyingPut compares ours measured with a leader applying.
	ratioSubmitApplyingPut = "ours (leader applying)/etcd-put ops/s"
	ratioSubmitTxn         = "ours/etcd-txn ops/s"
	ratioE2EPut            = "applied/etcd-put ops/s"
	ratioE2EP99            = "submit→applied p99 / etcd-put p99"
	ratioE2ESaturatedPut   = "applied (not waiting)/etcd-put ops/s"
	ratioPeerMutex         = "ours/mutex ops/s"
	ratioPeerLeader        = "ours/lease-leader ops/s"
	ratioDrainGetsCas      = "drain/gets+cas ops/s"
	ratioMemoryBacklog     = "peak RSS: backlog N / backlog N/10"
	ratioProcAPIPut        = "api/etcd-put ops/s"
	ratioProcAPIP99        = "api p99 / etcd-put p99"
	ratioProcAPILimits     = "api/api-without-limits ops/s"
	ratioProcDirectPut     = "direct/etcd-put ops/s"
	ratioProcDirectP99     = "direct p99 / etcd-put p99"
	ratioProcAPICPU        = "api CPU/op / etcd-put CPU/op"
	ratioProcAPIUnaryPut   = "api-unary/etcd-put ops/s"
	ratioProcAPIUnaryCPU   = "api-unary CPU/op / etcd-put CPU/op"
	ratioProcDirectCPU     = "direct CPU/op / etcd-put CPU/op"
)

// ratio returns a/b, or zero when b is zero (the baseline measured
// nothing; the run then fails anyway).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// addRatio records r under name at conc.
func (s *ScenarioReport) addRatio(name string, conc int, r Ratio) {
	r.Name, r.Concurrency = name, conc
	s.Ratios = append(s.Ratios, r)
}

func (s *ScenarioReport) notef(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

func findScenario(r *Report, name string) *ScenarioReport {
	for i := range r.Scenarios {
		if r.Scenarios[i].Name == name {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// findRatio returns the ratio named in scenario at conc (or, when conc is
// not measured, at the highest concurrency measured).
func findRatio(r *Report, scenario, name string, conc int) (Ratio, bool) {
	s := findScenario(r, scenario)
	if s == nil {
		return Ratio{}, false
	}
	var best Ratio
	found := false
	for _, x := range s.Ratios {
		if x.Name != name {
			continue
		}
		if x.Concurrency == conc {
			return x, true
		}
		if !found || x.Concurrency > best.Concurrency {
			best, found = x, true
		}
	}
	return best, found
}

func findMeasurement(r *Report, scenario, what string) (Measurement, bool) {
	s := findScenario(r, scenario)
	if s == nil {
		return Measurement{}, false
	}
	for _, m := range s.Measurements {
		if m.What == what {
			return m, true
		}
	}
	return Measurement{}, false
}

// evaluateTargets checks the performance targets against what ran.
func evaluateTargets(r *Report, cfg Config) []Target {
	var ts []Target
	atLeast := func(name, scenario, ratioName string, conc int, want float64) {
		x, ok := findRatio(r, scenario, ratioName, conc)
		if !ok {
			return
		}
		ts = append(ts, Target{
			Name: name, Want: fmt.Sprintf("≥ %.2g×", want), Got: gotRatio(x), Met: x.Value >= want,
		})
	}
	atLeast("submit ops/s vs etcd put", ScenarioSubmit, ratioSubmitPut, 64, 2)
	// "Sustained applied operations/s": callers that do not wait keep the
	// pipeline full. Callers that wait for each operation measure its
	// latency (64 in flight, each through two etcd commits where a put has
	// one) rather than the throughput; that ratio stays in the scenario's
	// table.
	atLeast("end-to-end sustained applied ops/s vs etcd put", ScenarioEndToEnd, ratioE2ESaturatedPut, 64, 1)
	if x, ok := findRatio(r, ScenarioEndToEnd, ratioE2EP99, 16); ok {
		ts = append(ts, Target{Name: "submit→applied p99 vs etcd put p99", Want: "≤ 3×",
			Got: gotRatio(x), Met: x.Value <= 3})
	}
	atLeast("drain ops/s vs memcached gets+cas", ScenarioDrain, ratioDrainGetsCas, drainBaselineConc, 0.5)
	if m, ok := findMeasurement(r, ScenarioFailover, whatGracefulApply); ok {
		ts = append(ts, Target{Name: "graceful stop → first apply (worst)", Want: "≤ 100 ms",
			Got: fmt.Sprintf("%.0f ms", m.MaxMs), Met: m.Ops > 0 && m.MaxMs <= 100})
	}
	if m, ok := findMeasurement(r, ScenarioFailover, whatKillApply); ok {
		limit := ms(cfg.LeaseTTL + time.Second)
		ts = append(ts, Target{Name: "kill -9 → first apply (worst)", Want: fmt.Sprintf("≤ %.0f ms (lease TTL + 1 s)", limit),
			Got: fmt.Sprintf("%.0f ms", m.MaxMs), Met: m.Ops > 0 && m.MaxMs <= limit})
	}
	atLeast("peer: ours vs etcd mutex + set", ScenarioPeer, ratioPeerMutex, peerConcurrency, 10)
	if x, ok := findRatio(r, ScenarioMemory, ratioMemoryBacklog, 0); ok {
		ts = append(ts, Target{Name: "leader peak RSS not growing with backlog", Want: "≤ 1.25×",
			Got: fmt.Sprintf("%.2f×", x.Value), Met: x.Value <= 1.25})
	}
	if x, ok := findRatio(r, ScenarioMultiProcess, ratioProcAPIPut, 0); ok {
		ts = append(ts, Target{Name: "multi-process: API submit/s vs etcd put/s", Want: "≥ 1×",
			Got: gotProcRatio(x, cfg), Met: x.Value >= 1})
	}
	if x, ok := findRatio(r, ScenarioMultiProcess, ratioProcAPIP99, 0); ok {
		ts = append(ts, Target{Name: "multi-process: API submit p99 vs etcd put p99", Want: "≤ 3×",
			Got: gotProcRatio(x, cfg), Met: x.Value <= 3})
	}
	if x, ok := findRatio(r, ScenarioMultiProcess, ratioProcAPICPU, 0); ok {
		ts = append(ts, Target{Name: "multi-process: API CPU per submission vs etcd put", Want: "≤ 0.7×",
			Got: gotProcRatio(x, cfg), Met: x.Value > 0 && x.Value <= 0.7})
	}
	ts = append(ts, fleetTargets(r)...)
	return ts
}

// gotProcRatio is how a target of the multi-process scenario shows the
// ratio it read: with the processes, the shape the target names.
func gotProcRatio(x Ratio, cfg Config) string {
	s := fmt.Sprintf("%.2f× (%d processes × %d)", x.Value, cfg.Processes, cfg.ProcessConcurrency)
	if len(x.Runs) > 1 {
		s = fmt.Sprintf("%.2f× (%d processes × %d, median of %d)", x.Value, cfg.Processes, cfg.ProcessConcurrency, len(x.Runs))
	}
	return s
}

// gotRatio is how a target shows the ratio it read.
func gotRatio(x Ratio) string {
	if len(x.Runs) > 1 {
		return fmt.Sprintf("%.2f× (c=%d, median of %d)", x.Value, x.Concurrency, len(x.Runs))
	}
	return fmt.Sprintf("%.2f× (c=%d)", x.Value, x.Concurrency)
}

// describe collects the environment of a run.
func describe(ctx context.Context, e *benchenv.Env, cfg Config) Environment {
	env := Environment{
		Date: time.Now().UTC().Truncate(time.Second), GoVersion: runtime.Version(),
		EmbeddedEtcd: e.Embedded, CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := e.Etcd.Status(sctx, e.Endpoints[0]); err == nil {
		env.EtcdVersion = st.Version
	}
	env.MemcachedVersion = memcachedVersion(cfg.Memcached[0])
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			env.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				env.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return env
}

// memcachedVersion asks memcached for its version; empty when it cannot.
func memcachedVersion(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("version\r\n")); err != nil {
		return ""
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "VERSION"))
}
