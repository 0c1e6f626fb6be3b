package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// Measurement names of the multi-process scenario.
const (
	whatProcAPI = "coordinator submit, node API (processes)"
	// whatProcAPIOpen is the API with its limits lifted, to measure what
	// the limits and checks cost.
	whatProcAPIOpen = "coordinator submit, node API without limits (processes)"
	// whatProcAPIUnary is the API with a Submit call per submission, what
	// the client's stream saves.
	whatProcAPIUnary = "coordinator submit, node API, unary calls (processes)"
	whatProcDirect   = "coordinator submit, direct (processes)"
	whatProcPut      = "etcd put (processes)"
)

const (
	// procReadyTimeout bounds the start of the caller processes, until
	// each has connected (and registered) and said so.
	procReadyTimeout = 2 * time.Minute
	// procResultTimeout bounds, after the measurement's end, the wait for
	// every process's result.
	procResultTimeout = 2 * time.Minute
	// procStartLead is how far ahead of its sending the start signal's instant
	// lies, plus procStartLeadEach per process: room to send the signal
	// to every process and for each to be scheduled before it.
	procStartLead     = 100 * time.Millisecond
	procStartLeadEach = 2 * time.Millisecond
)

// runMultiProcess measures many caller processes, Config.Processes of
// them with Config.ProcessConcurrency goroutines each, all child processes
// of this executable (WorkerMain), submitting one set each at a time:
//
//   - through one node's API (pkg/apiclient), whose one submitter groups
//     the submissions of every process into shared transactions: with the
//     client's default, each process's submissions on one SubmitStream;
//     with the API's limits lifted; and with a Submit call per submission;
//   - directly to etcd with pkg/client, where only the goroutines of one
//     process share transactions;
//   - and, the baseline, raw etcd puts from as many processes.
//
// Every process of a measurement starts at one instant and submits for
// Config.Duration; the run merges every latency sample of every process.
// As in submit, no leader applies while ours is measured, and the run
// waits until a node has applied the rest before the next measurement. The
// API is served by a server in this process (pkg/apiserver, as `serve
// --api-listen` runs it) on a loopback port, plain gRPC. Each measurement
// adds up the CPU time of every process involved over its window
// (CPUUse).
func (r *runner) runMultiProcess(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioMultiProcess}
	procs, per := r.cfg.Processes, r.cfg.ProcessConcurrency
	conc := procs * per
	addr, stop, err := r.startAPI(ctx, apiserver.Config{})
	if err != nil {
		return sr, err
	}
	defer stop()
	open, stopOpen, err := r.startAPI(ctx, unlimitedAPI)
	if err != nil {
		return sr, err
	}
	defer stopOpen()
	r.StopNode()
	c := newComparison()
	run := 0 // the API measurements so far, which name their profiles
	ours := func(variant, what, label, addr string) func() error {
		return func() error {
			r.StopNode()
			profile := ""
			if what == whatProcAPI && r.cfg.NodeCPUProfile != "" {
				run++
				profile = profilePath(r.cfg.NodeCPUProfile, run)
			}
			m, err := r.measureProcesses(ctx, variant, what, addr, profile)
			if err != nil {
				return err
			}
			c.add(m)
			if err := failed(m); err != nil {
				return err
			}
			return r.catchUp(ctx, sr, conc, label)
		}
	}
	err = r.compare(sr, c,
		c.measured(func() (Measurement, error) {
			r.StopNode()
			return r.measureProcesses(ctx, variantPut, whatProcPut, addr, "")
		}),
		ours(variantDirect, whatProcDirect, "direct to etcd", addr),
		ours(variantAPI, whatProcAPI, "through the API", addr),
		ours(variantAPI, whatProcAPIOpen, "through the API without limits", open),
		ours(variantAPIUnary, whatProcAPIUnary, "through the API, unary calls", addr),
	)
	if err != nil {
		return sr, err
	}
	sr.Measurements = append(sr.Measurements, c.median(whatProcAPI), c.median(whatProcAPIOpen), c.median(whatProcAPIUnary),
		c.median(whatProcDirect), c.median(whatProcPut))
	sr.addRatio(ratioProcAPILimits, conc, c.ratio(whatProcAPI, whatProcAPIOpen, opsPerSec))
	sr.addRatio(ratioProcAPIPut, conc, c.ratio(whatProcAPI, whatProcPut, opsPerSec))
	sr.addRatio(ratioProcAPIP99, conc, c.ratio(whatProcAPI, whatProcPut, p99Ms))
	sr.addRatio(ratioProcDirectPut, conc, c.ratio(whatProcDirect, whatProcPut, opsPerSec))
	sr.addRatio(ratioProcDirectP99, conc, c.ratio(whatProcDirect, whatProcPut, p99Ms))
	sr.addRatio(ratioProcAPIUnaryPut, conc, c.ratio(whatProcAPIUnary, whatProcPut, opsPerSec))
	sr.addRatio(ratioProcAPICPU, conc, c.ratio(whatProcAPI, whatProcPut, cpuPerOp))
	sr.addRatio(ratioProcAPIUnaryCPU, conc, c.ratio(whatProcAPIUnary, whatProcPut, cpuPerOp))
	sr.addRatio(ratioProcDirectCPU, conc, c.ratio(whatProcDirect, whatProcPut, cpuPerOp))
	sr.notef("%d caller processes × %d goroutines each (CONC is their product), every process with a "+
		"connection and, for ours, a registration of its own; all start at one instant, submit for %s, "+
		"and the percentiles are of every latency sample of every process", procs, per, r.cfg.Duration)
	sr.notef("the API server runs in the bench process on a loopback port, plain gRPC, " +
		"one submitter shared by every process; through the API each process's submissions go on one SubmitStream, " +
		"unary calls make a Submit call each; direct, each process groups only its own goroutines")
	sr.notef("%s", r.cpuCounted())
	if run > 0 {
		sr.notef("CPU profiles of the bench process over the API measurements' windows: %s (go tool pprof merges them)",
			strings.Join(profilePaths(r.cfg.NodeCPUProfile, run), ", "))
	}
	return sr, nil
}

// cpuCounted says what the CPU figures count.
func (r *runner) cpuCounted() string {
	s := "CPU µs/op counts, from the common start until every process has reported its last operation, " +
		"every caller process (each measures itself) and the bench process"
	switch {
	case r.Embedded:
		s += ", which serves the node's API and runs etcd"
	case r.cfg.EtcdPID != 0:
		s += fmt.Sprintf(", which serves the node's API, and etcd's process (pid %d)", r.cfg.EtcdPID)
	default:
		s += ", which serves the node's API; not etcd's process (give its pid with --etcd-pid)"
	}
	return s + "; not memcached (no leader applies during a measurement), nor the processes' start-up and unregistration"
}

// profilePath is where the node CPU profile of API measurement run (from
// 1) goes: path for the first, path.N for run N.
func profilePath(path string, run int) string {
	if run == 1 {
		return path
	}
	return path + "." + strconv.Itoa(run)
}

// profilePaths are the paths of runs node CPU profiles.
func profilePaths(path string, runs int) []string {
	ps := make([]string, runs)
	for i := range ps {
		ps[i] = profilePath(path, i+1)
	}
	return ps
}

// unlimitedAPI lifts every limit of the API server that a call pays for:
// the rates, the concurrent calls and the registrations.
var unlimitedAPI = apiserver.Config{
	CallRate: math.Inf(1), RegisterRate: math.Inf(1), MaxConcurrentCalls: math.MaxInt32,
	MaxRegistrations: math.MaxInt32, MaxStreams: math.MaxInt32,
}

// startAPI serves the caller API with cfg (its etcd, namespace and logger
// filled in) on a free loopback port, on an etcd connection of its own,
// until stop is called.
func (r *runner) startAPI(ctx context.Context, cfg apiserver.Config) (addr string, stop func(), err error) {
	cli, err := r.Dial(ctx)
	if err != nil {
		return "", nil, err
	}
	cfg.Etcd, cfg.Namespace = cli, r.Namespace
	cfg.Logger = slog.New(slog.NewTextHandler(progressLog{r}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := apiserver.New(cfg)
	if err != nil {
		cli.Close()
		return "", nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cli.Close()
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis) }()
	return lis.Addr().String(), func() {
		cancel()
		if err := <-done; err != nil {
			r.Progressf("  caller API: %v", err)
		}
		cli.Close()
	}, nil
}

// progressLog writes log lines to the progress stream.
type progressLog struct{ r *runner }

func (l progressLog) Write(p []byte) (int, error) {
	l.r.Progressf("  api: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// measureProcesses runs one measurement of variant in Config.Processes
// caller processes and merges what they measured. A process that fails
// fails the measurement; every process has exited when it returns.
//
// It measures the CPU time of the whole system over the measurement's
// window (CPUUse); with profile set, it writes a CPU profile of this
// process over that window into that file.
func (r *runner) measureProcesses(ctx context.Context, variant, what, apiAddr, profile string) (Measurement, error) {
	procs, per := r.cfg.Processes, r.cfg.ProcessConcurrency
	ws := make([]*benchenv.Worker, 0, procs)
	defer func() {
		// Normally they have exited; after a failure they are killed.
		for _, w := range ws {
			w.Kill()
			r.Reap(w.Child)
		}
	}()
	for i := range procs {
		w, err := r.StartWorker(fmt.Sprintf("%s-%d", variant, i))
		if err != nil {
			return Measurement{}, err
		}
		ws = append(ws, w)
		if err := w.Send(r.workerSpec(variant, i, apiAddr)); err != nil {
			return Measurement{}, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, procReadyTimeout)
	err := eachWorker(ws, func(_ int, w *benchenv.Worker) error {
		var ready workerReady
		if err := w.Receive(rctx, &ready); err != nil {
			return err
		}
		if ready.Error != "" {
			return fmt.Errorf("%s; %s", ready.Error, w.Describe())
		}
		return nil
	})
	cancel()
	if err != nil {
		return Measurement{}, err
	}
	start := time.Now().Add(procStartLead + time.Duration(procs)*procStartLeadEach)
	for _, w := range ws {
		if err := w.Send(workerGo{Start: start}); err != nil {
			return Measurement{}, err
		}
	}
	rctx, cancel = context.WithDeadline(ctx, start.Add(r.cfg.Duration+procResultTimeout))
	defer cancel()
	// The window whose CPU time counts opens at the common start and
	// closes once every process has sent its result, which it does after
	// its last operation and before it unregisters.
	cpu, err := r.startCPUWindow(rctx, start, profile)
	if err != nil {
		return Measurement{}, err
	}
	results := make([]workerResult, len(ws))
	err = eachWorker(ws, func(i int, w *benchenv.Worker) error {
		if err := w.Receive(rctx, &results[i]); err != nil {
			return err
		}
		if results[i].Error != "" {
			return fmt.Errorf("%s; %s", results[i].Error, w.Describe())
		}
		return nil
	})
	use, cerr := cpu.end()
	if err != nil {
		return Measurement{}, err
	}
	if cerr != nil {
		return Measurement{}, cerr
	}
	for _, w := range ws {
		w.CloseInput()
	}
	err = eachWorker(ws, func(_ int, w *benchenv.Worker) error {
		// It exits once it has closed its registration.
		select {
		case <-w.Done():
			return nil
		case <-rctx.Done():
			return fmt.Errorf("did not exit: %w; %s", rctx.Err(), w.Describe())
		}
	})
	if err != nil {
		return Measurement{}, err
	}
	m := measurement(what, procs*per, mergeResults(results))
	var late time.Duration
	for i, x := range results {
		late = max(late, time.Duration(x.Late))
		use.CallersSec += time.Duration(x.CPU).Seconds()
		use.CallersLifeSec += ws[i].CPUTime().Seconds()
	}
	use.perOp(m.Ops)
	m.CPU, m.Value, m.Unit = &use, use.PerOpMicros, cpuUnit
	m.Note = joinNote(fmt.Sprintf("the last process started %.1f ms after the common start; %s", ms(late), use.describe()), m.Note)
	r.progressMeasurement(m)
	return m, nil
}

// cpuUnit is the unit of the Value of a multi-process measurement.
const cpuUnit = "CPU µs/op"

// cpuWindow measures the CPU time of the bench process (and of the etcd
// process given with Config.EtcdPID) from a start instant to its end.
type cpuWindow struct {
	r       *runner
	started chan struct{} // closed once the start was sampled
	stop    chan struct{} // closed by end, to give up a start not reached
	self0   time.Duration
	etcd0   time.Duration
	err     error
	profile func() error // stops a CPU profile under way; nil when none
}

// startCPUWindow samples the CPU times at start, on a goroutine of its own;
// with profile set, it starts a CPU profile of this process into that file
// there too.
func (r *runner) startCPUWindow(ctx context.Context, start time.Time, profile string) (*cpuWindow, error) {
	var f *os.File
	if profile != "" {
		var err error
		if f, err = os.Create(profile); err != nil {
			return nil, fmt.Errorf("node CPU profile: %w", err)
		}
	}
	w := &cpuWindow{r: r, started: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(w.started)
		t := time.NewTimer(time.Until(start))
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.stop:
		case <-ctx.Done():
		}
		if f != nil {
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				w.err = fmt.Errorf("node CPU profile: %w", err)
			} else {
				w.profile = func() error {
					pprof.StopCPUProfile()
					return f.Close()
				}
			}
		}
		w.self0 = selfCPU()
		if pid := r.cfg.EtcdPID; pid != 0 && w.err == nil {
			w.etcd0, w.err = pidCPU(pid)
		}
	}()
	return w, nil
}

// end closes the window and returns the CPU time of the bench process and
// of the etcd process over it.
func (w *cpuWindow) end() (CPUUse, error) {
	close(w.stop)
	<-w.started
	var use CPUUse
	use.BenchSec = (selfCPU() - w.self0).Seconds()
	err := w.err
	if pid := w.r.cfg.EtcdPID; pid != 0 && err == nil {
		var t time.Duration
		t, err = pidCPU(pid)
		use.EtcdSec = (t - w.etcd0).Seconds()
	}
	if w.profile != nil {
		if perr := w.profile(); err == nil && perr != nil {
			err = fmt.Errorf("node CPU profile: %w", perr)
		}
	}
	return use, err
}

// workerSpec is what caller process i of variant is sent.
func (r *runner) workerSpec(variant string, i int, apiAddr string) workerSpec {
	// As for the nodes: the run's security settings are for the etcd it
	// was pointed at, none for the one it started.
	var sec etcdconn.Security
	if !r.Embedded {
		sec = r.cfg.Security
	}
	return workerSpec{
		Variant: variant, Endpoints: r.Endpoints, Security: sec, DialTimeout: r.cfg.DialTimeout,
		Namespace: r.Namespace, APIAddr: apiAddr, Name: fmt.Sprintf("proc-%s-%d", variant, i),
		Index: i, Goroutines: r.cfg.ProcessConcurrency, Duration: r.cfg.Duration,
		Keys: r.Keys, RawPrefix: r.Scratch(benchenv.RawPrefix), RawKeys: r.cfg.Keys, Value: r.Value,
	}
}

// mergeResults adds up the processes' results: their operations and errors,
// every latency sample, and the longest elapsed time (each from the common
// start to its last operation's end).
func mergeResults(rs []workerResult) loadResult {
	var res loadResult
	n := 0
	for _, x := range rs {
		n += len(x.Latencies)
	}
	res.lat = make([]time.Duration, 0, n)
	for _, x := range rs {
		res.ops += x.Ops
		res.errors += x.Errors
		if res.firstErr == nil && x.FirstError != "" {
			res.firstErr = errors.New(x.FirstError)
		}
		res.elapsed = max(res.elapsed, time.Duration(x.Elapsed))
		for _, l := range x.Latencies {
			res.lat = append(res.lat, time.Duration(l))
		}
	}
	return res
}

// eachWorker runs f for every worker (and its index) at once and returns
// the first worker's error, with how many failed.
func eachWorker(ws []*benchenv.Worker, f func(int, *benchenv.Worker) error) error {
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, w)
		}()
	}
	wg.Wait()
	var first error
	n := 0
	for _, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%d of %d caller processes failed, the first: %w", n, len(ws), first)
	}
	return first
}
