package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
)

// fleetActive runs the active callers once, as measurement what:
// fleetActiveProcs processes register their callers through the API
// (names beginning with id), start at one instant and submit for
// Config.Duration. Its note has the machine's load and the node's garbage
// collections and CPU over the run.
func (r *runner) fleetActive(ctx context.Context, s *fleetServers, what, id string, keys []string) (Measurement, error) {
	per := fleetActiveCallers / fleetActiveProcs
	specs := make([]fleetSpec, fleetActiveProcs)
	for i := range specs {
		specs[i] = fleetSpec{
			Role: fleetRoleActive, APIAddr: s.apiAddr, Prefix: fmt.Sprintf("%s-%d-", id, i),
			Count: per, Index: i, Keys: keys, Value: r.Value, Duration: r.cfg.Duration, TTL: r.cfg.FleetTTL,
		}
	}
	ws, err := r.startFleetProcesses(ctx, id, specs)
	defer func() {
		for _, w := range ws {
			w.Kill()
			r.Reap(w.Child)
		}
	}()
	if err != nil {
		return Measurement{}, err
	}
	load := loadAverage()
	g0, err := r.nodeGC(ctx, s)
	if err != nil {
		return Measurement{}, err
	}
	start := time.Now().Add(fleetStartLead)
	for _, w := range ws {
		if err := w.Send(fleetGo{Start: start}); err != nil {
			return Measurement{}, err
		}
	}
	rctx, cancel := context.WithDeadline(ctx, start.Add(r.cfg.Duration+fleetWaitTimeout))
	defer cancel()
	results := make([]fleetActiveResult, len(ws))
	err = eachWorker(ws, func(i int, w *benchenv.Worker) error { return w.Receive(rctx, &results[i]) })
	if err != nil {
		return Measurement{}, err
	}
	g1, err := r.nodeGC(ctx, s)
	if err != nil {
		return Measurement{}, err
	}
	// Done with them: each unregisters its callers and exits.
	err = eachWorker(ws, func(_ int, w *benchenv.Worker) error {
		w.CloseInput()
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
	m, late := mergeActive(what, results)
	m.Note = joinNote(fmt.Sprintf("load %s; the node: %s; the last process started %.1f ms after the common start",
		load, g1.since(g0), ms(late)), m.Note)
	r.progressMeasurement(m)
	if m.Ops == 0 {
		return m, fmt.Errorf("%s: nothing succeeded: %s", m.What, m.Note)
	}
	return m, nil
}

// nodeGCReading is the node's garbage collection and CPU at one moment.
type nodeGCReading struct {
	at              time.Time
	cycles, pausedS float64
	cpu             time.Duration
}

// nodeGC reads the node's garbage collections (go_gc_duration_seconds)
// and CPU time.
func (r *runner) nodeGC(ctx context.Context, s *fleetServers) (nodeGCReading, error) {
	g := nodeGCReading{at: time.Now()}
	m, err := scrape(ctx, s.nodeMetrics)
	if err != nil {
		return g, err
	}
	g.cycles, _ = m.sum("go_gc_duration_seconds_count")
	g.pausedS, _ = m.sum("go_gc_duration_seconds_sum")
	g.cpu, err = pidCPU(s.node.Pid())
	return g, err
}

// since describes the node's collections and CPU from g0 to g.
func (g nodeGCReading) since(g0 nodeGCReading) string {
	d := g.at.Sub(g0.at).Seconds()
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f GC cycles, %.1f ms of pauses, %.0f%% of a core", g.cycles-g0.cycles,
		1000*(g.pausedS-g0.pausedS), 100*(g.cpu-g0.cpu).Seconds()/d)
}

// mergeActive adds up the active processes' results into one measurement
// of every latency sample; late is how late the last process started.
func mergeActive(what string, rs []fleetActiveResult) (Measurement, time.Duration) {
	var res loadResult
	var late time.Duration
	for _, x := range rs {
		res.ops += x.Ops
		res.errors += x.Errors
		if res.firstErr == nil && x.FirstError != "" {
			res.firstErr = errors.New(x.FirstError)
		}
		res.elapsed = max(res.elapsed, time.Duration(x.Elapsed))
		late = max(late, time.Duration(x.Late))
		for _, l := range x.Latencies {
			res.lat = append(res.lat, time.Duration(l))
		}
	}
	return measurement(what, fleetActiveCallers, res), late
}

// deleteKeys deletes keys from memcached, errors ignored.
func (r *runner) deleteKeys(keys []string) {
	eachIndex(len(keys), 16, func(i int) { _ = r.Memcache.Delete(keys[i]) })
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute load, empty when it
// cannot be read.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
