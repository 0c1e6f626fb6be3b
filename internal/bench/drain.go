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
func (r *runner) runDrain(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioDrain}
	r.StopNode()
	r.StopChildren()

	gc, err := r.getsCas(ctx, drainBaselineConc)
	if err != nil {
		return sr, err
	}
	sub, last, err := r.submitBacklog(ctx, r.cfg.Backlog)
	if err != nil {
		return sr, err
	}
	pending, err := r.Pending(ctx)
	if err != nil {
		return sr, err
	}
	r.Progressf("  %d batches pending; starting a node", pending)
	start := time.Now()
	if err := r.StartNode(ctx); err != nil {
		return sr, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := r.Client.WaitApplied(wctx, last); err != nil {
		return sr, fmt.Errorf("wait for the backlog to be applied: %w", err)
	}
	elapsed := time.Since(start)
	st := r.NodeStats()
	drain := Measurement{What: whatDrain, Ops: sub.Ops, Seconds: elapsed.Seconds(), OpsPerSec: float64(sub.Ops) / elapsed.Seconds()}
	r.progressMeasurement(drain)
	sr.Measurements = append(sr.Measurements, drain, gc, sub)
	sr.addRatio(ratioDrainGetsCas, drainBaselineConc, Ratio{Value: ratio(drain.OpsPerSec, gc.OpsPerSec)})
	sr.notef("the new leader wrote %d operations to memcached and skipped %d older ones on the same keys "+
		"(it writes the newest per key of each round of at most %d batches; %d keys), in %d etcd commits",
		st.Applied, st.Skipped, applier.DefaultMaxBatchesPerCommit, r.cfg.Keys, st.Commits)
	sr.notef("the time includes the node's start and election; %d batches were pending", pending)
	return sr, failed(drain, gc, sub)
}

// getsCas measures raw gets+cas on memcached: each operation reads a key
// with gets and writes it back with cas, reading again on a conflict, as a
// fenced write does.
func (r *runner) getsCas(ctx context.Context, conc int) (Measurement, error) {
	for i := range r.cfg.Keys {
		if err := r.Memcache.Set(&memcache.Item{Key: fmt.Sprintf("%s:gc%d", r.Namespace, i), Value: r.Value}); err != nil {
			return Measurement{}, fmt.Errorf("memcached set: %w", err)
		}
	}
	return r.measure(ctx, whatGetsCas, conc, func(ctx context.Context, w, i int) error {
		key := r.Key("gc", w, i)
		for range 64 {
			it, err := r.Memcache.Get(key)
			if err != nil {
				return err
			}
			it.Value = r.Value
			err = r.Memcache.CompareAndSwap(it)
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
func (r *runner) submitBacklog(ctx context.Context, n int) (Measurement, client.Token, error) {
	var next atomic.Int64
	var (
		lastMu sync.Mutex
		last   client.Token
	)
	var failures atomic.Int64
	var firstErr error
	var errOnce sync.Once
	lat := make([][]time.Duration, backlogConc)
	r.Progressf("  submitting a backlog of %d operations", n)
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
				r.Progressf("  ... %d of %d submitted", min(next.Load(), int64(n)), n)
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
				tok, err := r.Caller(w).Set(ctx, r.Keys[i%len(r.Keys)], r.Value, 0)
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
	r.progressMeasurement(m)
	if err := ctx.Err(); err != nil {
		return m, client.Token{}, err
	}
	if res.ops == 0 {
		return m, client.Token{}, fmt.Errorf("backlog: no submission accepted (%s)", m.Note)
	}
	return m, last, nil
}
