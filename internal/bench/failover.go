package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Measurement names of the failover scenario.
const (
	whatGracefulElect = "graceful stop → new term taken"
	whatGracefulApply = "graceful stop → first apply by new leader"
	whatKillElect     = "kill -9 → new term taken"
	whatKillApply     = "kill -9 → first apply by new leader"
)

// runFailover runs two nodes as child processes and, for each round, stops
// the leader (SIGTERM, then in other rounds SIGKILL) while one writer keeps
// submitting. A watch on the term and on the applied watermark times the
// new leader: from the signal to the new term, and from the signal to the
// first watermark the new leader commits (its first operations applied).
func (e *env) runFailover(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioFailover}
	e.stopNode()
	e.stopChildren()
	var nodes []*child
	seq := 0
	ensure := func() error {
		for len(nodes) < 2 {
			seq++
			c, err := e.startChild(fmt.Sprintf("bench-node-%d", seq))
			if err != nil {
				return err
			}
			nodes = append(nodes, c)
		}
		if err := e.waitCampaigning(ctx, 2, nodes...); err != nil {
			return err
		}
		return e.probe(ctx)
	}
	kinds := []struct {
		sig                 syscall.Signal
		label, elect, apply string
	}{
		{syscall.SIGTERM, "graceful stop (SIGTERM)", whatGracefulElect, whatGracefulApply},
		{syscall.SIGKILL, "kill -9 (SIGKILL)", whatKillElect, whatKillApply},
	}
	// A range read of the pending prefix, as a new leader makes: its cost
	// grows with the deleted batches etcd still indexes (until compaction).
	t := time.Now()
	if _, err := e.pending(ctx); err != nil {
		return sr, err
	}
	sr.notef("a count of the pending prefix took %.1f ms before the rounds (etcd revision %d)", ms(time.Since(t)), e.revision(ctx))
	var rounds []string
	for _, k := range kinds {
		var elect, apply []time.Duration
		for round := range e.cfg.FailoverRounds {
			if err := ensure(); err != nil {
				return sr, err
			}
			lead, err := e.leader(ctx, nodes)
			if err != nil {
				return sr, err
			}
			el, ap, err := e.failoverRound(ctx, lead, k.sig)
			if err != nil {
				return sr, fmt.Errorf("%s round %d: %w", k.label, round+1, err)
			}
			replayed := "?"
			for _, c := range nodes {
				if c != lead {
					replayed = replayedBatches(c.out.String())
				}
			}
			e.progress("  %-45s round %d: new term after %7.1f ms, first apply after %7.1f ms (replayed %s batches)", k.label, round+1, ms(el), ms(ap), replayed)
			rounds = append(rounds, fmt.Sprintf("%s %.0f/%.0f ms (%s)", k.label, ms(el), ms(ap), replayed))
			elect, apply = append(elect, el), append(apply, ap)
			for i, c := range nodes {
				if c == lead {
					nodes = append(nodes[:i], nodes[i+1:]...)
					break
				}
			}
		}
		for _, x := range []struct {
			what string
			lat  []time.Duration
		}{{k.elect, elect}, {k.apply, apply}} {
			s := summarize(x.lat)
			sr.Measurements = append(sr.Measurements, Measurement{
				What: x.what, Ops: int64(s.n), P50Ms: ms(s.p50), P99Ms: ms(s.p99), MaxMs: ms(s.max),
				Value: ms(s.max), Unit: "ms (worst)",
			})
		}
	}
	sr.notef("lease TTL %s; two nodes run as child processes; a writer submits throughout; times run from the signal to the watch event", e.cfg.LeaseTTL)
	sr.notef("rounds, new term/first apply (batches the new leader replayed): %s", strings.Join(rounds, "; "))
	return sr, nil
}

// failoverRound signals the leader and times the takeover.
func (e *env) failoverRound(ctx context.Context, lead *child, sig syscall.Signal) (elect, apply time.Duration, err error) {
	rctx, cancel := context.WithTimeout(ctx, 3*e.cfg.LeaseTTL+probeTimeout)
	defer cancel()
	resp, err := e.cli.Get(rctx, e.layout.Term())
	if err != nil {
		return 0, 0, err
	}
	from := resp.Header.Revision + 1
	wctx := clientv3.WithRequireLeader(rctx)
	termCh := e.cli.Watch(wctx, e.layout.Term(), clientv3.WithRev(from))
	appliedCh := e.cli.Watch(wctx, e.layout.Applied(), clientv3.WithRev(from))

	// One writer keeps operations pending throughout.
	wrCtx, stopWriter := context.WithCancel(rctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; wrCtx.Err() == nil; i++ {
			_, _ = e.callers[0].Set(wrCtx, e.key("k", 0, i), e.value, 0)
		}
	}()
	defer func() {
		stopWriter()
		wg.Wait()
	}()

	type event struct {
		rev  int64
		when time.Time
	}
	var termRev int64
	var termAt time.Time
	var applied []event
	t0 := time.Now()
	lead.signal(sig)
	for {
		select {
		case wr, ok := <-termCh:
			now := time.Now()
			if !ok || wr.Err() != nil {
				return 0, 0, fmt.Errorf("term watch ended: %w", errors.Join(wr.Err(), rctx.Err()))
			}
			for _, ev := range wr.Events {
				if termRev == 0 && ev.Type == clientv3.EventTypePut {
					termRev, termAt = ev.Kv.ModRevision, now
				}
			}
		case wr, ok := <-appliedCh:
			now := time.Now()
			if !ok || wr.Err() != nil {
				return 0, 0, fmt.Errorf("watermark watch ended: %w", errors.Join(wr.Err(), rctx.Err()))
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					applied = append(applied, event{rev: ev.Kv.ModRevision, when: now})
				}
			}
		}
		if termRev == 0 {
			continue
		}
		for _, a := range applied {
			if a.rev > termRev {
				e.reap(lead)
				return termAt.Sub(t0), a.when.Sub(t0), nil
			}
		}
	}
}

// revision returns etcd's current revision, 0 when it cannot be read.
func (e *env) revision(ctx context.Context) int64 {
	resp, err := e.cli.Get(ctx, "health")
	if err != nil {
		return 0
	}
	return resp.Header.Revision
}

// replayedBatches returns the batch count of the last replay a node
// logged, "0" when it logged none.
func replayedBatches(log string) string {
	n := "0"
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "replaying pending batches") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "batches="); ok {
				n = v
			}
		}
	}
	return n
}

// reap waits for a signalled child to exit and forgets it.
func (e *env) reap(c *child) {
	select {
	case <-c.done:
	case <-time.After(childStopTimeout):
		c.signal(syscall.SIGKILL)
		<-c.done
	}
	e.forget(c)
}
