package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Measurement names of the submit scenario.
const (
	whatSubmit = "coordinator submit"
	// whatSubmitApplying is ours with a leader applying at the same time.
	whatSubmitApplying = "coordinator submit, leader applying"
	whatEtcdPut        = "etcd put"
	whatEtcdTxn        = "etcd txn (compare mod revision + put)"
)

// runSubmit measures accepted submissions per second and their latency at
// each concurrency, next to raw etcd puts and guarded etcd transactions at
// the same concurrency on the same etcd.
//
// Ours is measured twice. First with no leader applying, like the
// baselines: on one machine the leader's memcached writes and etcd clean-up
// take CPU from etcd and the submitters, which a deployment (callers,
// coordinator nodes and etcd on different machines) would not see; this is
// the figure the ratios use. Then with a node running and applying, for
// reference. After each, the run waits until the node has caught up, so the
// next measurement does not share etcd with it.
//
// With Config.Repeat above 1, the baselines and ours with no leader run
// that many times, in reverse order every other time; ours with a leader
// applying runs once, after them.
func (r *runner) runSubmit(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioSubmit}
	if err := r.StartNode(ctx); err != nil {
		return sr, err
	}
	if err := r.Probe(ctx); err != nil {
		return sr, err
	}
	guards, err := r.makeGuards(ctx)
	if err != nil {
		return sr, err
	}
	submit := func(ctx context.Context, w, i int) error {
		_, err := r.Caller(w).Set(ctx, r.Key("k", w, i), r.Value, 0)
		return err
	}
	for _, conc := range r.cfg.Concurrency {
		c := newComparison()
		err := r.compare(sr, c, func() error {
			r.StopNode()
			put := r.measure(ctx, whatEtcdPut, conc, r.EtcdPut)
			txn := r.measure(ctx, whatEtcdTxn, conc, r.guardedTxn(guards))
			c.add(put, txn)
			return failed(put, txn)
		}, func() error {
			r.StopNode()
			ours := r.measure(ctx, whatSubmit, conc, submit)
			c.add(ours)
			if err := failed(ours); err != nil {
				return err
			}
			return r.catchUp(ctx, sr, conc, "no leader applying")
		})
		if err != nil {
			return sr, err
		}
		// The last run may have ended with the baselines, node stopped.
		if err := r.StartNode(ctx); err != nil {
			sr.Measurements = append(sr.Measurements, c.medians()...)
			return sr, err
		}
		applying := r.measure(ctx, whatSubmitApplying, conc, submit)
		c.add(applying)
		if err := r.catchUp(ctx, sr, conc, "leader applying"); err != nil {
			sr.Measurements = append(sr.Measurements, c.medians()...)
			return sr, err
		}
		sr.Measurements = append(sr.Measurements, c.median(whatSubmit), applying, c.median(whatEtcdPut), c.median(whatEtcdTxn))
		sr.addRatio(ratioSubmitPut, conc, c.ratio(whatSubmit, whatEtcdPut, opsPerSec))
		sr.addRatio(ratioSubmitTxn, conc, c.ratio(whatSubmit, whatEtcdTxn, opsPerSec))
		// Ours with a leader applying runs once, after the repetitions; it
		// is compared with the median put.
		sr.addRatio(ratioSubmitApplyingPut, conc, Ratio{Value: ratio(applying.OpsPerSec, c.median(whatEtcdPut).OpsPerSec)})
		if err := failed(applying); err != nil {
			return sr, err
		}
	}
	return sr, nil
}

// catchUp starts the node if it is not running, waits until nothing is
// pending, noting how long that took, and compacts the etcd the run started.
func (r *runner) catchUp(ctx context.Context, sr *ScenarioReport, conc int, what string) error {
	start := time.Now()
	if err := r.StartNode(ctx); err != nil {
		return err
	}
	if err := r.WaitNothingPending(ctx); err != nil {
		return err
	}
	sr.notef("c=%d, %s: the node had applied the rest %.2fs after the submissions stopped", conc, what, time.Since(start).Seconds())
	// The next measurement starts on a compacted etcd, as one a deployment
	// compacts would be, whatever this one left in its history.
	return r.CompactOwnEtcd(ctx)
}

// guard is a key whose mod revision a guarded transaction compares.
type guard struct {
	key string
	rev int64
}

// guardedTxn is the guarded etcd transaction baseline: operation i of
// worker w compares the mod revision of its guard and puts Value at
// RawKey(w, i).
func (r *runner) guardedTxn(guards []guard) func(ctx context.Context, w, i int) error {
	return func(ctx context.Context, w, i int) error {
		g := guards[w%len(guards)]
		resp, err := r.Etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(g.key), "=", g.rev)).
			Then(clientv3.OpPut(r.RawKey(w, i), string(r.Value))).
			Commit()
		if err == nil && !resp.Succeeded {
			err = errors.New("guard compare failed")
		}
		return err
	}
}

// makeGuards writes one guard key per registration name.
func (r *runner) makeGuards(ctx context.Context) ([]guard, error) {
	gs := make([]guard, len(r.Callers))
	for i := range gs {
		key := r.Scratch("guard/" + strconv.Itoa(i))
		resp, err := r.Etcd.Put(ctx, key, "guard")
		if err != nil {
			return nil, err
		}
		gs[i] = guard{key: key, rev: resp.Header.Revision}
	}
	return gs, nil
}

// measure runs a closed-loop measurement and reports it as progress.
func (r *runner) measure(ctx context.Context, what string, conc int, op func(ctx context.Context, w, i int) error) Measurement {
	m := measurement(what, conc, closedLoop(ctx, conc, r.cfg.Duration, op))
	r.progressMeasurement(m)
	return m
}

func (r *runner) progressMeasurement(m Measurement) {
	conc := "-"
	if m.Concurrency > 0 {
		conc = strconv.Itoa(m.Concurrency)
	}
	r.Progressf("  %-45s c=%-4s %9.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  errors %d", m.What, conc, m.OpsPerSec, m.P50Ms, m.P99Ms, m.Errors)
}

// failed returns an error when a measurement did nothing but fail.
func failed(ms ...Measurement) error {
	for _, m := range ms {
		if m.Ops == 0 {
			return fmt.Errorf("%s at concurrency %d: no operation succeeded (%s)", m.What, m.Concurrency, m.Note)
		}
	}
	return nil
}
