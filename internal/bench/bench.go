// Package bench measures the coordinator against the etcd and memcached it
// runs on, and against the baselines a user would otherwise build: raw etcd
// puts and transactions, an etcd mutex around direct memcached sets, a
// lease-based leader writing without fencing, raw gets+cas on memcached.
//
// Every scenario runs its baselines in the same process, against the same
// etcd and memcached, right before or interleaved with the coordinator's own
// measurement, and reports the ratio. Each run works in a namespace of its
// own (bench-<random>) and deletes its keys from etcd and memcached when it
// ends. Between scenarios, everything pending is applied, and an embedded
// etcd the run started itself is compacted up to the applied watermark.
//
// Scenarios, one file each:
//
//   - submit: accepted submissions per second and their latency.
//   - end-to-end: operations per second from submission to memcached, and
//     the submit-to-applied latency.
//   - peer: the same workload built without the coordinator.
//   - drain: how fast a new leader applies a backlog.
//   - failover: how long until a new leader applies, after a graceful stop
//     and after a kill -9 of the leader.
//   - memory: a node's resident memory while draining a backlog and with
//     many registrations (opt-in).
//   - multi-process: many caller processes submitting through a node's
//     API and directly to etcd, against raw etcd puts from as many
//     processes (opt-in).
//   - fleet: thousands of idle registrations held through a node's API and
//     directly, with the node's and etcd's memory and etcd's keep-alives
//     per registration, and active callers submitting among them against
//     none (opt-in).
//
// A scenario is a method of runner; what the scenarios share (etcd,
// memcached, the namespace and its callers, the nodes they start, the
// baselines' keys) is package benchenv's Env, which runner embeds.
package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
)

// Scenario names.
const (
	ScenarioSubmit   = "submit"
	ScenarioEndToEnd = "end-to-end"
	ScenarioPeer     = "peer"
	ScenarioDrain    = "drain"
	ScenarioFailover = "failover"
	ScenarioMemory   = "memory"
	// ScenarioMultiProcess runs its callers as child processes
	// (WorkerMain).
	ScenarioMultiProcess = "multi-process"
	// ScenarioFleet holds many idle registrations from child processes
	// (FleetWorkerMain) while active callers submit.
	ScenarioFleet = "fleet"
)

// Concurrency levels of the scenarios other than submit.
const (
	endToEndConc16    = 16
	endToEndConc64    = 64
	peerConcurrency   = 64
	drainBaselineConc = 16
)

// AllScenarios lists every scenario in the order they run.
var AllScenarios = []string{ScenarioSubmit, ScenarioEndToEnd, ScenarioPeer, ScenarioDrain, ScenarioFailover, ScenarioMemory, ScenarioMultiProcess, ScenarioFleet}

// DefaultScenarios are the scenarios run when none are named: all but
// memory, which takes long, and multi-process and fleet, which start many
// processes; those are opt-in.
var DefaultScenarios = []string{ScenarioSubmit, ScenarioEndToEnd, ScenarioPeer, ScenarioDrain, ScenarioFailover}

// DefaultConcurrency is the default list of concurrency levels of submit.
var DefaultConcurrency = []int{1, 16, 64, 256}

// runner runs the scenarios of one run in its environment: a scenario is a
// method of runner, and the environment's methods (servers, nodes, callers,
// the baselines' keys) are promoted from the embedded Env.
type runner struct {
	*benchenv.Env
	cfg Config
}

// Run runs the configured scenarios and returns the report. On a failure it
// returns what was measured so far together with the error. Everything it
// started is stopped and its keys are deleted before it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	env, err := benchenv.Open(ctx, cfg.envConfig())
	if err != nil {
		return nil, err
	}
	defer env.Close()
	r := &runner{Env: env, cfg: cfg}
	rep := &Report{Namespace: env.Namespace, Environment: describe(ctx, env, cfg), Settings: settingsOf(cfg)}
	for _, name := range AllScenarios {
		if !slices.Contains(cfg.Scenarios, name) {
			continue
		}
		r.Progressf("== %s", name)
		start := time.Now()
		sr, err := r.runScenario(ctx, name)
		if sr != nil {
			sr.Seconds = time.Since(start).Seconds()
			rep.Scenarios = append(rep.Scenarios, *sr)
		}
		if err == nil {
			// Leave nothing behind for the next scenario.
			err = r.Settle(ctx)
		}
		if err != nil {
			rep.Targets = evaluateTargets(rep, cfg)
			return rep, fmt.Errorf("bench: %s: %w", name, err)
		}
	}
	rep.Targets = evaluateTargets(rep, cfg)
	return rep, nil
}

func (r *runner) runScenario(ctx context.Context, name string) (*ScenarioReport, error) {
	switch name {
	case ScenarioSubmit:
		return r.runSubmit(ctx)
	case ScenarioEndToEnd:
		return r.runEndToEnd(ctx)
	case ScenarioPeer:
		return r.runPeer(ctx)
	case ScenarioDrain:
		return r.runDrain(ctx)
	case ScenarioFailover:
		return r.runFailover(ctx)
	case ScenarioMemory:
		return r.runMemory(ctx)
	case ScenarioMultiProcess:
		return r.runMultiProcess(ctx)
	case ScenarioFleet:
		return r.runFleet(ctx)
	}
	return nil, fmt.Errorf("unknown scenario %q", name)
}
