package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Measurement names of the drain scenario.
const (
	whatBacklogSubmit = "backlog submit (no leader running)"
	whatDrain         = "coordinator drain of the backlog (new leader)"
	whatGetsCas       = "memcached gets+cas"
	backlogConc       = 64
)

// runDrain submits a backlog while no leader runs, then starts a node and
// times until all of it is applied; next to raw memcached gets+cas (the
// round trips a fenced write makes) at concurrency 16.
func (e *env) runDrain(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioDrain}
	e.stopNode()
	e.stopChildren()

	gc, err := e.getsCas(ctx, drainBaselineConc)
	if err != nil {
		return sr, err
	}
	sub, last, err := e.submitBacklog(ctx, e.cfg.Backlog)
	if err != nil {
		return sr, err
	}
	pending, err := e.pending(ctx)
	if err != nil {
		return sr, err
	}
	e.progress("  %d batches pending; starting a node", pending)
	start := time.Now()
	if err := e.startNode(ctx); err != nil {
		return sr, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := e.client.WaitApplied(wctx, last); err != nil {
		return sr, fmt.Errorf("wait for the backlog to be applied: %w", err)
	}
	elapsed := time.Since(start)
	st := e.nodeStats()
	drain := Measurement{What: whatDrain, Ops: sub.Ops, Seconds: elapsed.Seconds(), OpsPerSec: float64(sub.Ops) / elapsed.Seconds()}
	e.progressMeasurement(drain)
	sr.Measurements = append(sr.Measurements, drain, gc, sub)
	sr.addRatio(ratioDrainGetsCas, drainBaselineConc, Ratio{Value: ratio(drain.OpsPerSec, gc.OpsPerSec)})
	sr.notef("the new leader wrote %d operations to memcached and skipped %d older ones on the same keys (it writes the newest per key of each round of at most %d batches; %d keys), in %d etcd commits",
		st.applied, st.skipped, applier.DefaultMaxBatchesPerCommit, e.cfg.Keys, st.commits)
	sr.notef("the time includes the node's start and election; %d batches were pending", pending)
	return sr, failed(drain, gc, sub)
}

// getsCas measures raw gets+cas on memcached: each operation reads a key
// with gets and writes it back with cas, reading again on a conflict, as a
// fenced write does.
func (e *env) getsCas(ctx context.Context, conc int) (Measurement, error) {
	for i := range e.cfg.Keys {
		if err := e.mc.Set(&memcache.Item{Key: fmt.Sprintf("%s:gc%d", e.ns, i), Value: e.value}); err != nil {
			return Measurement{}, fmt.Errorf("memcached set: %w", err)
		}
	}
	return e.measure(ctx, whatGetsCas, conc, func(ctx context.Context, w, i int) error {
		key := e.key("gc", w, i)
		for range 64 {
			it, err := e.mc.Get(key)
			if err != nil {
				return err
			}
			it.Value = e.value
			err = e.mc.CompareAndSwap(it)
			if !errors.Is(err, memcache.ErrCASConflict) {
				return err
			}
		}
		return errors.New("cas kept conflicting")
	}), nil
}

// submitBacklog submits n operations, one per batch, from backlogConc
// workers, and returns the measurement and the highest token. Operation i
// writes key i modulo the key space, so every key is used alike and a key
// space of at least n gives every operation a key of its own.
func (e *env) submitBacklog(ctx context.Context, n int) (Measurement, client.Token, error) {
	var next atomic.Int64
	var (
		lastMu sync.Mutex
		last   client.Token
	)
	var failures atomic.Int64
	var firstErr error
	var errOnce sync.Once
	lat := make([][]time.Duration, backlogConc)
	e.progress("  submitting a backlog of %d operations", n)
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				e.progress("  ... %d of %d submitted", min(next.Load(), int64(n)), n)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range backlogConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				tok, err := e.caller(w).Set(ctx, e.keys[i%len(e.keys)], e.value, 0)
				if err != nil {
					failures.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
				lastMu.Lock()
				last = tokenseq.Max(last, tok)
				lastMu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	res := loadResult{elapsed: time.Since(start), errors: failures.Load(), firstErr: firstErr}
	for _, l := range lat {
		res.ops += int64(len(l))
		res.lat = append(res.lat, l...)
	}
	m := measurement(whatBacklogSubmit, backlogConc, res)
	e.progressMeasurement(m)
	if err := ctx.Err(); err != nil {
		return m, client.Token{}, err
	}
	if res.ops == 0 {
		return m, client.Token{}, fmt.Errorf("backlog: no submission accepted (%s)", m.Note)
	}
	return m, last, nil
}

// nodeCounters are the in-process node's applier counters.
type nodeCounters struct{ applied, skipped, commits, batches, watches uint64 }

// sub returns the counts since o.
func (c nodeCounters) sub(o nodeCounters) nodeCounters {
	return nodeCounters{c.applied - o.applied, c.skipped - o.skipped, c.commits - o.commits, c.batches - o.batches, c.watches - o.watches}
}

// String describes the applier's work.
func (c nodeCounters) String() string {
	per := 0.0
	if c.commits > 0 {
		per = float64(c.batches) / float64(c.commits)
	}
	return fmt.Sprintf("the node wrote %d operations to memcached, skipped %d, in %d etcd commits (%.1f batches per commit), reading %d watches",
		c.applied, c.skipped, c.commits, per, c.watches)
}

func (e *env) nodeStats() nodeCounters {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.node == nil {
		return nodeCounters{}
	}
	s := e.node.stats
	return nodeCounters{applied: s.Applied.Load(), skipped: s.Skipped.Load(), commits: s.Commits.Load(), batches: s.Batches.Load(), watches: s.Watches.Load()}
}
