package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
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
	whatProcDirect  = "coordinator submit, direct (processes)"
	whatProcPut     = "etcd put (processes)"
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
//     the submissions of every process into shared transactions;
//   - directly to etcd with pkg/client, where only the goroutines of one
//     process share transactions;
//   - and, the baseline, raw etcd puts from as many processes.
//
// Every process of a measurement starts at one instant and submits for
// Config.Duration; the run merges every latency sample of every process.
// As in submit, no leader applies while ours is measured, and the run
// waits until a node has applied the rest before the next measurement. The
// API is served by a server in this process (pkg/apiserver, as `serve
// --api-listen` runs it) on a loopback port, plain gRPC.
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
	ours := func(variant, what, label, addr string) func() error {
		return func() error {
			r.StopNode()
			m, err := r.measureProcesses(ctx, variant, what, addr)
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
			return r.measureProcesses(ctx, variantPut, whatProcPut, addr)
		}),
		ours(variantDirect, whatProcDirect, "direct to etcd", addr),
		ours(variantAPI, whatProcAPI, "through the API", addr),
		ours(variantAPI, whatProcAPIOpen, "through the API without limits", open),
	)
	if err != nil {
		return sr, err
	}
	sr.Measurements = append(sr.Measurements, c.median(whatProcAPI), c.median(whatProcAPIOpen), c.median(whatProcDirect), c.median(whatProcPut))
	sr.addRatio(ratioProcAPILimits, conc, c.ratio(whatProcAPI, whatProcAPIOpen, opsPerSec))
	sr.addRatio(ratioProcAPIPut, conc, c.ratio(whatProcAPI, whatProcPut, opsPerSec))
	sr.addRatio(ratioProcAPIP99, conc, c.ratio(whatProcAPI, whatProcPut, p99Ms))
	sr.addRatio(ratioProcDirectPut, conc, c.ratio(whatProcDirect, whatProcPut, opsPerSec))
	sr.addRatio(ratioProcDirectP99, conc, c.ratio(whatProcDirect, whatProcPut, p99Ms))
	sr.notef("%d caller processes × %d goroutines each (CONC is their product), every process with a "+
		"connection and, for ours, a registration of its own; all start at one instant, submit for %s, "+
		"and the percentiles are of every latency sample of every process", procs, per, r.cfg.Duration)
	sr.notef("the API server runs in the bench process on a loopback port, plain gRPC, " +
		"one submitter shared by every process; direct, each process groups only its own goroutines")
	return sr, nil
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
func (r *runner) measureProcesses(ctx context.Context, variant, what, apiAddr string) (Measurement, error) {
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
		w.CloseInput()
	}
	rctx, cancel = context.WithDeadline(ctx, start.Add(r.cfg.Duration+procResultTimeout))
	defer cancel()
	results := make([]workerResult, len(ws))
	err = eachWorker(ws, func(i int, w *benchenv.Worker) error {
		if err := w.Receive(rctx, &results[i]); err != nil {
			return err
		}
		if results[i].Error != "" {
			return fmt.Errorf("%s; %s", results[i].Error, w.Describe())
		}
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
	for _, x := range results {
		late = max(late, time.Duration(x.Late))
	}
	m.Note = joinNote(fmt.Sprintf("the last process started %.1f ms after the common start", ms(late)), m.Note)
	r.progressMeasurement(m)
	return m, nil
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
