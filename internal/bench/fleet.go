package bench

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// DefaultFleetIdle are the numbers of idle registrations the fleet
// scenario holds when Config.FleetIdle is empty.
var DefaultFleetIdle = []int{1000, 10_000}

// The shape of the fleet scenario.
const (
	// fleetActiveCallers submit while the idle ones are held, in
	// fleetActiveProcs processes, each caller a registration of its own
	// submitting one set at a time.
	fleetActiveCallers = 64
	fleetActiveProcs   = 4
	// fleetPerProcess bounds the idle registrations one process holds;
	// each kind (API, direct) has at least fleetMinProcs processes.
	fleetPerProcess = 2500
	fleetMinProcs   = 2
	// fleetPerConn is how many idle registrations share one connection:
	// one apiclient.Client (under the node's 1,000 HTTP/2 streams per
	// connection) or one client.Client.
	fleetPerConn = 500
	// fleetRegisterConc is how many registrations a holding process makes
	// at once.
	fleetRegisterConc = 32
	// maxFleetIdle bounds an entry of Config.FleetIdle.
	maxFleetIdle = 100_000
	// fleetWaitTimeout bounds each wait of the scenario: for processes to
	// be ready, for registrations, for the node to hold every stream.
	fleetWaitTimeout = 5 * time.Minute
	// fleetStartLead is how far ahead of its sending a start signal's
	// instant lies.
	fleetStartLead = 200 * time.Millisecond
)

// Measurement and ratio names of the fleet scenario; %d is the number of
// idle registrations.
const (
	whatFleetActive     = "active callers through the API, %d idle"
	whatFleetBase       = "active callers through the API, none idle (paired with %d)"
	whatFleetRegister   = "registering %d idle callers (%d API, %d direct)"
	whatFleetKeepAlives = "etcd lease keep-alive requests/s, %d idle"
	whatFleetNodeRSS    = "node RSS per idle API caller, %d idle"
	whatFleetNodeGo     = "node goroutines per idle API caller, %d idle"
	whatFleetEtcdRSS    = "etcd RSS per registration, %d idle"
	whatFleetEtcdDB     = "etcd db size in use per registration, %d idle"
	ratioFleetP99       = "active p99, %d idle / none"
	ratioFleetOps       = "active ops/s, %d idle / none"
)

// fleetPlan is how the idle registrations of one phase are spread.
type fleetPlan struct {
	// Idle registrations in all: API through the node, Direct on etcd.
	Idle, API, Direct int
	// APIProcs and DirectProcs are the registrations of each holding
	// process.
	APIProcs, DirectProcs []int
}

// planFleet splits n idle registrations: half (rounded up) through the
// node's API, the rest direct, each kind over processes of at most
// fleetPerProcess.
func planFleet(n int) fleetPlan {
	api := (n + 1) / 2
	return fleetPlan{Idle: n, API: api, Direct: n - api, APIProcs: spreadOver(api), DirectProcs: spreadOver(n - api)}
}

// spreadOver spreads n registrations over as few processes as hold them
// (fleetPerProcess each), at least fleetMinProcs (or n, when fewer), as
// evenly as can be.
func spreadOver(n int) []int {
	if n <= 0 {
		return nil
	}
	procs := max(min(n, fleetMinProcs), (n+fleetPerProcess-1)/fleetPerProcess)
	out := make([]int, procs)
	for i := range out {
		out[i] = n / procs
		if i < n%procs {
			out[i]++
		}
	}
	return out
}

// fleetAddrs are the node's listeners in the fleet scenario.
type fleetAddrs struct {
	API     string // gRPC alone, on gRPC's own server
	APIHTTP string // HTTP/JSON
	Metrics string // metrics, health and the profiler
}

// fleetNodeArgs are the node's flags beyond the usual: the API's gRPC and
// HTTP/JSON on listeners of their own, as a node sized for thousands of
// streams is run (a stream costs a goroutine on gRPC's own server, three
// through net/http), the metrics listener (with the profiler, on
// loopback), and limits lifted
// so that they are not what the scenario measures: room for every
// registration and stream with a margin, and per-identity rates that
// every caller process, all of them one identity on loopback, stays far
// under.
func fleetNodeArgs(addrs fleetAddrs, p fleetPlan) []string {
	room := strconv.Itoa(max(apiserver.DefaultMaxRegistrations, 2*(p.API+fleetActiveCallers)))
	const lifted = "1000000000"
	return []string{
		"--api-listen", addrs.API, "--api-http-listen", addrs.APIHTTP, "--http-listen", addrs.Metrics,
		"--enable-pprof", "--log-level", "warn",
		"--api-max-registrations", room, "--api-max-streams", room,
		"--api-register-rate", lifted, "--api-register-burst", lifted,
		"--api-call-rate", lifted, "--api-call-burst", lifted,
	}
}

// fleetSample is the memory of the node and of etcd at one moment.
// NodeLive and EtcdLive are the processes' live heap as their last
// garbage collection found it: half their next heap goal
// (go_memstats_next_gc_bytes, at the default GOGC of 100), which moves
// less with garbage not yet collected than the heap in use does.
type fleetSample struct {
	NodeRSS        int64
	NodeGoroutines float64
	NodeLive       float64
	// EtcdRSS is zero when etcd's process is not known, EtcdLive when its
	// metrics cannot be read.
	EtcdRSS         int64
	EtcdLive        float64
	DBSize, DBInUse int64
}

// fleetCounters are the counters read at each end of the idle window.
type fleetCounters struct {
	At time.Time
	// EtcdKeepAlives are etcd's LeaseKeepAlive requests received, and
	// EtcdRenewed its lease renewals; EtcdCounted is false when etcd's
	// metrics cannot be read.
	EtcdKeepAlives, EtcdRenewed float64
	EtcdCounted                 bool
	// NodeKeepAlives are the keep-alive messages the node sent its API
	// callers: a KeepAlive response per renewal, a KeepAliveMany response
	// for the renewals of many.
	NodeKeepAlives float64
	// Limited counts the calls the node's limits refused.
	Limited float64
	// NodeCPU and EtcdCPU are the processes' CPU time; EtcdCPU is zero
	// when etcd's process is not known. HoldersCPU is the holding
	// processes' together.
	NodeCPU, EtcdCPU, HoldersCPU time.Duration
}

// fleetPhase is what one phase measured: the node, etcd and the active
// callers with Plan.Idle idle registrations held.
type fleetPhase struct {
	Plan fleetPlan
	// Before is the memory of the fresh node and etcd; After with every
	// idle registration held, after the idle window, before any active
	// caller ran.
	Before, After fleetSample
	// Registered, RegErrors, RegElapsed and RegLatencies are the idle
	// registrations' outcome, from the common start to the last.
	Registered, RegErrors int64
	RegFirstErr           string
	RegElapsed            time.Duration
	RegLatencies          []time.Duration
	// Lost counts idle registrations that ended or lost their lease while
	// held; UnregErrors the unregistrations that failed at the end.
	Lost, UnregErrors     int64
	FirstLoss, FirstUnreg string
	// W0 and W1 are the counters at each end of the idle window.
	W0, W1 fleetCounters
	// Active is each run of the active callers while the idle ones were
	// held, Base each run with none, the run of the same index its pair.
	Base, Active []Measurement
}

// errors counts what went wrong with the idle callers and the node's
// limits in the phase (the active callers' errors are their runs').
func (p fleetPhase) errors() int64 {
	return p.RegErrors + p.Lost + p.UnregErrors + int64(p.W1.Limited)
}

// runFleet measures a fleet: for each of Config.FleetIdle idle
// registrations, half held through a node's API (KeepAlive streams) and
// half directly on etcd (pkg/client sessions), all from child processes,
// it reads the node's and etcd's memory, etcd's lease keep-alive rate and
// the registration rate, then measures fleetActiveCallers callers
// submitting through the API among the idle ones and with none. Every
// phase runs a fresh node, `coordinator serve` as a child process, and,
// unless the run was given --endpoints, a fresh etcd in a child process of
// its own, so that each process's memory and CPU are its own.
func (r *runner) runFleet(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioFleet}
	r.StopNode()
	r.StopChildren()
	var phases []fleetPhase
	for i, n := range r.cfg.FleetIdle {
		p, err := r.fleetPhase(ctx, i, planFleet(n))
		phases = append(phases, p)
		if err != nil {
			fleetResults(sr, phases, r.cfg.FleetTTL)
			return sr, fmt.Errorf("%d idle: %w", n, err)
		}
	}
	fleetResults(sr, phases, r.cfg.FleetTTL)
	etcdAt := "an etcd the phase started in a process of its own (a fresh one per phase)"
	if !r.Embedded {
		etcdAt = "the etcd given (--endpoints), shared by the phases, its memory read when --etcd-pid names its process; " +
			"keep-alives and memory counted there include other clients'"
	}
	sr.notef("each phase: a fresh node (`coordinator serve`, a process of its own) on %s; the idle callers in child "+
		"processes, half through the node's API (pkg/apiclient, %d to a Client: a connection and one KeepAliveMany stream) and half "+
		"direct (pkg/client sessions, %d per etcd connection), at most %d per process, lease TTL %s; %d active callers "+
		"in %d processes submit through the API, one set at a time, each waiting for its token, in pairs of runs "+
		"adjacent in time: one while the idle callers are held, one with none (released, and registered again for "+
		"the next pair), idle first and none first in turn", etcdAt, fleetPerConn, fleetPerConn, fleetPerProcess,
		r.cfg.FleetTTL, fleetActiveCallers, fleetActiveProcs)
	sr.notef("the node's registration and stream caps are raised to twice what the phase registers (at least "+
		"the default %d) and its per-identity rates lifted, since every caller process shares the loopback "+
		"address; its limit refusals (coordinator_api_limited_total) are counted as errors", apiserver.DefaultMaxRegistrations)
	sr.notef("keep-alive requests are etcd's own count (grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\"}) " +
		"over the idle window; memory per caller is the difference between the phase's fresh node (and etcd) and the " +
		"same at the end of the idle window, before any active caller ran, " +
		"read from /proc/PID/status (VmRSS) and the node's /metrics (go_goroutines; the live heap is half of " +
		"go_memstats_next_gc_bytes, the heap goal its last collection set)")
	return sr, nil
}

// fleetPhase runs phase idx with plan's idle registrations on a fresh node
// (and etcd): the idle registrations and their window, then Config.Repeat
// pairs of runs of the active callers, among the idle ones and with none.
// The memory is read on the fresh processes and at the end of the idle
// window, before any active caller ran, so that the difference is the idle
// callers' alone.
func (r *runner) fleetPhase(ctx context.Context, idx int, plan fleetPlan) (p fleetPhase, err error) {
	p.Plan = plan
	r.Progressf("  fleet: %d idle (%d through the API, %d direct)", plan.Idle, plan.API, plan.Direct)
	s, err := r.startFleetServers(ctx, idx, plan)
	if err != nil {
		return p, err
	}
	defer func() {
		if cerr := r.stopFleetServers(ctx, s); err == nil {
			err = cerr
		}
	}()
	keys := make([]string, r.cfg.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s:fleet%d-k%d", r.Namespace, idx, i)
	}
	defer r.deleteKeys(keys)
	if p.Before, err = r.fleetSample(ctx, s); err != nil {
		return p, err
	}
	var holders []*benchenv.Worker
	defer func() {
		for _, w := range holders {
			w.Kill()
			r.Reap(w.Child)
		}
	}()
	holders, api, err := r.fleetRegister(ctx, idx, 0, s, &p)
	if err != nil {
		return p, err
	}
	if err := r.fleetWaitKept(ctx, s, api); err != nil {
		return p, err
	}
	window := idleWindow(r.cfg.Duration, r.cfg.FleetTTL)
	if p.W0, err = r.fleetCount(ctx, s, holders); err != nil {
		return p, err
	}
	r.Progressf("  fleet: idle for %s", window)
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return p, ctx.Err()
	}
	if p.W1, err = r.fleetCount(ctx, s, holders); err != nil {
		return p, err
	}
	if p.After, err = r.fleetSample(ctx, s); err != nil {
		return p, err
	}
	r.Progressf("  fleet: node RSS %.1f → %.1f MiB, %.0f → %.0f goroutines; %.0f keep-alives/s",
		float64(p.Before.NodeRSS)/mib, float64(p.After.NodeRSS)/mib, p.Before.NodeGoroutines, p.After.NodeGoroutines,
		perSecond(p.W0, p.W1, func(c fleetCounters) float64 { return c.EtcdKeepAlives }))
	// The comparison: pairs of runs adjacent in time, one among the idle
	// callers and one with none, in turn idle first and none first, the
	// idle callers released and registered again in between, so that a
	// change of the machine's load favours neither side of a pair.
	registered := true
	for run := range r.cfg.Repeat {
		order := []bool{true, false}
		if run%2 == 1 {
			order = []bool{false, true}
		}
		for _, idle := range order {
			if idle != registered {
				if idle {
					if holders, api, err = r.fleetRegister(ctx, idx, run, s, &p); err != nil {
						return p, err
					}
					if err := r.fleetWaitKept(ctx, s, api); err != nil {
						return p, err
					}
				} else {
					err = r.fleetRelease(ctx, holders, &p)
					holders = nil
					if err != nil {
						return p, err
					}
				}
				registered = idle
			}
			what, id, ms := whatFleetBase, "base", &p.Base
			if idle {
				what, id, ms = whatFleetActive, "active", &p.Active
			}
			m, err := r.fleetActive(ctx, s, fmt.Sprintf(what, plan.Idle), fmt.Sprintf("fleet%d-%s%d", idx, id, run), keys)
			if err != nil {
				return p, err
			}
			*ms = append(*ms, m)
		}
	}
	if registered {
		err = r.fleetRelease(ctx, holders, &p)
		holders = nil
		if err != nil {
			return p, err
		}
	}
	// The limits' refusals over the whole phase.
	c, err := r.fleetCount(ctx, s, nil)
	if err != nil {
		return p, err
	}
	p.W1.Limited = c.Limited
	return p, nil
}

// fleetSample reads the memory of the node and etcd.
func (r *runner) fleetSample(ctx context.Context, s *fleetServers) (fleetSample, error) {
	var x fleetSample
	var err error
	if x.NodeRSS, _, err = procStatus(s.node.Pid()); err != nil {
		return x, err
	}
	m, err := scrape(ctx, s.nodeMetrics)
	if err != nil {
		return x, err
	}
	x.NodeGoroutines, _ = m.sum("go_goroutines")
	x.NodeLive, _ = m.sum("go_memstats_next_gc_bytes")
	x.NodeLive /= 2
	if s.etcdPid != 0 {
		if x.EtcdRSS, _, err = procStatus(s.etcdPid); err != nil {
			return x, err
		}
	}
	if s.etcdMetrics != "" {
		em, err := scrape(ctx, s.etcdMetrics)
		if err != nil {
			return x, err
		}
		x.EtcdLive, _ = em.sum("go_memstats_next_gc_bytes")
		x.EtcdLive /= 2
	}
	st, err := s.cli.Status(ctx, s.endpoints[0])
	if err != nil {
		return x, err
	}
	x.DBSize, x.DBInUse = st.DbSize, st.DbSizeInUse
	return x, nil
}

// fleetCount reads the counters of the idle window, the CPU time of the
// holding processes hs included.
func (r *runner) fleetCount(ctx context.Context, s *fleetServers, hs []*benchenv.Worker) (fleetCounters, error) {
	c := fleetCounters{At: time.Now()}
	for _, h := range hs {
		cpu, err := pidCPU(h.Pid())
		if err != nil {
			return c, err
		}
		c.HoldersCPU += cpu
	}
	m, err := scrape(ctx, s.nodeMetrics)
	if err != nil {
		return c, err
	}
	one, _ := m.sum("grpc_server_msg_sent_total", "grpc_method", "KeepAlive")
	many, _ := m.sum("grpc_server_msg_sent_total", "grpc_method", "KeepAliveMany")
	c.NodeKeepAlives = one + many
	c.Limited, _ = m.sum("coordinator_api_limited_total")
	if c.NodeCPU, err = pidCPU(s.node.Pid()); err != nil {
		return c, err
	}
	if s.etcdPid != 0 {
		if c.EtcdCPU, err = pidCPU(s.etcdPid); err != nil {
			return c, err
		}
	}
	if s.etcdMetrics != "" {
		em, err := scrape(ctx, s.etcdMetrics)
		if err != nil {
			return c, err
		}
		var ok1, ok2 bool
		c.EtcdKeepAlives, ok1 = em.sum("grpc_server_msg_received_total", "grpc_method", "LeaseKeepAlive")
		c.EtcdRenewed, ok2 = em.sum("etcd_debugging_lease_renewed_total")
		c.EtcdCounted = ok1 && ok2
	}
	return c, nil
}

// perSecond is the rate of a counter between two readings.
func perSecond(a, b fleetCounters, f func(fleetCounters) float64) float64 {
	d := b.At.Sub(a.At).Seconds()
	if d <= 0 {
		return 0
	}
	return (f(b) - f(a)) / d
}

// fleetRegister starts the phase's holding processes, makes their
// registrations (round round of the phase) from one common start and
// records the outcome in p: the first round's in full, a later round's
// errors. It returns the processes, which go on holding their
// registrations until fleetRelease, and how many registrations through
// the API succeeded.
func (r *runner) fleetRegister(ctx context.Context, idx, round int, s *fleetServers, p *fleetPhase) (ws []*benchenv.Worker, api int, err error) {
	var specs []fleetSpec
	var sec etcdconn.Security
	if !s.own {
		sec = r.cfg.Security
	}
	for i, n := range p.Plan.APIProcs {
		specs = append(specs, fleetSpec{
			Role: fleetRoleAPI, APIAddr: s.apiAddr, Prefix: fmt.Sprintf("fleet%d-r%d-api%d-", idx, round, i),
			Count: n, PerConn: fleetPerConn, Concurrency: fleetRegisterConc, TTL: r.cfg.FleetTTL,
		})
	}
	for i, n := range p.Plan.DirectProcs {
		specs = append(specs, fleetSpec{
			Role: fleetRoleDirect, Endpoints: s.endpoints, Security: sec, DialTimeout: r.cfg.DialTimeout,
			Namespace: r.Namespace, Prefix: fmt.Sprintf("fleet%d-r%d-direct%d-", idx, round, i),
			Count: n, PerConn: fleetPerConn, Concurrency: fleetRegisterConc, TTL: r.cfg.FleetTTL,
		})
	}
	ws, err = r.startFleetProcesses(ctx, fmt.Sprintf("fleet%d-r%d-idle", idx, round), specs)
	if err != nil {
		return ws, 0, err
	}
	r.Progressf("  fleet: registering %d idle callers from %d processes", p.Plan.Idle, len(ws))
	start := time.Now().Add(fleetStartLead)
	for _, w := range ws {
		if err := w.Send(fleetGo{Start: start}); err != nil {
			return ws, 0, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, fleetWaitTimeout)
	defer cancel()
	regs := make([]fleetRegistered, len(ws))
	if err := eachWorker(ws, func(i int, w *benchenv.Worker) error { return w.Receive(rctx, &regs[i]) }); err != nil {
		return ws, 0, err
	}
	// The API's holding processes come first.
	for _, x := range regs[:len(p.Plan.APIProcs)] {
		api += int(x.Registered)
	}
	var this fleetPhase
	mergeRegistered(&this, regs)
	r.Progressf("  fleet: %d registered in %.1fs (%d errors)", this.Registered, this.RegElapsed.Seconds(), this.RegErrors)
	if round == 0 {
		// The first registrations, on the fresh node, are the ones timed.
		mergeRegistered(p, regs)
	} else {
		p.RegErrors += this.RegErrors
		p.RegFirstErr = cmp.Or(p.RegFirstErr, this.RegFirstErr)
	}
	if this.Registered == 0 {
		return ws, 0, fmt.Errorf("no registration succeeded: %s", this.RegFirstErr)
	}
	return ws, api, nil
}

// mergeRegistered adds up the holding processes' registrations into p: the
// elapsed time is the longest, from the common start.
func mergeRegistered(p *fleetPhase, regs []fleetRegistered) {
	for _, x := range regs {
		p.Registered += x.Registered
		p.RegErrors += x.Errors
		if p.RegFirstErr == "" {
			p.RegFirstErr = x.FirstError
		}
		p.RegElapsed = max(p.RegElapsed, time.Duration(x.Elapsed))
		for _, l := range x.Latencies {
			p.RegLatencies = append(p.RegLatencies, time.Duration(l))
		}
	}
}

// startFleetProcesses starts one process per spec, sends it its spec and
// waits until every one is ready. On an error the processes started are
// returned, for the caller to stop.
func (r *runner) startFleetProcesses(ctx context.Context, id string, specs []fleetSpec) ([]*benchenv.Worker, error) {
	ws := make([]*benchenv.Worker, 0, len(specs))
	for i, spec := range specs {
		cmd, err := r.fleetCommand()
		if err != nil {
			return ws, err
		}
		w, err := r.StartCommand(fmt.Sprintf("%s-%d", id, i), cmd)
		if err != nil {
			return ws, err
		}
		ws = append(ws, w)
		if err := w.Send(spec); err != nil {
			return ws, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, fleetWaitTimeout)
	defer cancel()
	return ws, eachWorker(ws, func(_ int, w *benchenv.Worker) error {
		var ready fleetReady
		if err := w.Receive(rctx, &ready); err != nil {
			return err
		}
		if ready.Error != "" {
			return fmt.Errorf("%s; %s", ready.Error, w.Describe())
		}
		return nil
	})
}

// fleetRelease tells the holding processes to stop (their stdin closed):
// each reports which registrations were lost while held, unregisters the
// rest and exits.
func (r *runner) fleetRelease(ctx context.Context, ws []*benchenv.Worker, p *fleetPhase) error {
	rctx, cancel := context.WithTimeout(ctx, fleetWaitTimeout)
	defer cancel()
	rels := make([]fleetReleased, len(ws))
	err := eachWorker(ws, func(i int, w *benchenv.Worker) error {
		w.CloseInput()
		if err := w.Receive(rctx, &rels[i]); err != nil {
			return err
		}
		select {
		case <-w.Done():
			return nil
		case <-rctx.Done():
			return fmt.Errorf("did not exit: %w; %s", rctx.Err(), w.Describe())
		}
	})
	for _, w := range ws {
		w.Kill()
		r.Reap(w.Child)
	}
	for _, x := range rels {
		p.Lost += x.Lost
		p.UnregErrors += x.UnregisterErrs
		if p.FirstLoss == "" {
			p.FirstLoss = x.FirstLoss
		}
		if p.FirstUnreg == "" {
			p.FirstUnreg = x.FirstUnregError
		}
	}
	return err
}
