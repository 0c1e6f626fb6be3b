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

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
)

// Measurement names of the failover scenario.
const (
	whatGracefulElect = "graceful stop → new term taken"
	whatGracefulApply = "graceful stop → first apply by new leader"
	whatKillElect     = "kill -9 → new term taken"
	whatKillApply     = "kill -9 → first apply by new leader"
)

// failoverKind is one way the failover scenario stops the leader, with the
// names of the two times it measures.
type failoverKind struct {
	sig                 syscall.Signal
	label, elect, apply string
}

var failoverKinds = []failoverKind{
	{syscall.SIGTERM, "graceful stop (SIGTERM)", whatGracefulElect, whatGracefulApply},
	{syscall.SIGKILL, "kill -9 (SIGKILL)", whatKillElect, whatKillApply},
}

// runFailover runs two nodes as child processes and, for each round, stops
// the leader (SIGTERM, then in other rounds SIGKILL) while one writer keeps
// submitting. A watch on the term and on the applied watermark times the
// new leader: from the signal to the new term, and from the signal to the
// first watermark the new leader commits (its first operations applied).
func (r *runner) runFailover(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioFailover}
	r.StopNode()
	r.StopChildren()
	// A range read of the pending prefix, as a new leader makes: its cost
	// grows with the deleted batches etcd still indexes (until compaction).
	t := time.Now()
	if _, err := r.Pending(ctx); err != nil {
		return sr, err
	}
	sr.notef("a count of the pending prefix took %.1f ms before the rounds (etcd revision %d)",
		ms(time.Since(t)), r.Revision(ctx))
	p := &nodePair{}
	var rounds []string
	for _, k := range failoverKinds {
		elect, apply, err := r.failoverRounds(ctx, p, k, &rounds)
		if err != nil {
			return sr, err
		}
		sr.Measurements = append(sr.Measurements, worstOf(k.elect, elect), worstOf(k.apply, apply))
	}
	sr.notef("lease TTL %s; two nodes run as child processes; a writer submits throughout; "+
		"times run from the signal to the watch event", r.cfg.LeaseTTL)
	sr.notef("rounds, new term/first apply (batches the new leader replayed): %s", strings.Join(rounds, "; "))
	return sr, nil
}

// worstOf is the measurement of the times lat, its value the worst.
func worstOf(what string, lat []time.Duration) Measurement {
	s := summarize(lat)
	return Measurement{
		What: what, Ops: int64(s.n), P50Ms: ms(s.p50), P99Ms: ms(s.p99), MaxMs: ms(s.max),
		Value: ms(s.max), Unit: "ms (worst)",
	}
}

// nodePair is the two nodes the failover rounds run, as child processes.
type nodePair struct {
	nodes []*benchenv.Child
	seq   int // how many were started
}

// ensurePair starts nodes until two run, and waits until both campaign and
// one applies.
func (r *runner) ensurePair(ctx context.Context, p *nodePair) error {
	for len(p.nodes) < 2 {
		p.seq++
		c, err := r.StartChild(fmt.Sprintf("bench-node-%d", p.seq))
		if err != nil {
			return err
		}
		p.nodes = append(p.nodes, c)
	}
	if err := r.WaitCampaigning(ctx, 2, p.nodes...); err != nil {
		return err
	}
	return r.Probe(ctx)
}

// failoverRounds runs Config.FailoverRounds rounds of stopping p's leader
// the way k does, and returns each round's time to the new term and to
// the new leader's first apply. It appends a line per round to rounds.
func (r *runner) failoverRounds(ctx context.Context, p *nodePair, k failoverKind, rounds *[]string) (
	elect, apply []time.Duration, err error) {
	for round := range r.cfg.FailoverRounds {
		if err := r.ensurePair(ctx, p); err != nil {
			return nil, nil, err
		}
		lead, err := r.Leader(ctx, p.nodes)
		if err != nil {
			return nil, nil, err
		}
		el, ap, err := r.failoverRound(ctx, lead, k.sig)
		if err != nil {
			return nil, nil, fmt.Errorf("%s round %d: %w", k.label, round+1, err)
		}
		replayed := "?"
		for _, c := range p.nodes {
			if c != lead {
				replayed = replayedBatches(c.Output())
			}
		}
		r.Progressf("  %-45s round %d: new term after %7.1f ms, first apply after %7.1f ms (replayed %s batches)",
			k.label, round+1, ms(el), ms(ap), replayed)
		*rounds = append(*rounds, fmt.Sprintf("%s %.0f/%.0f ms (%s)", k.label, ms(el), ms(ap), replayed))
		elect, apply = append(elect, el), append(apply, ap)
		for i, c := range p.nodes {
			if c == lead {
				p.nodes = append(p.nodes[:i], p.nodes[i+1:]...)
				break
			}
		}
	}
	return elect, apply, nil
}

// failoverRound signals the leader and times the takeover.
func (r *runner) failoverRound(ctx context.Context, lead *benchenv.Child, sig syscall.Signal) (
	elect, apply time.Duration, err error) {
	rctx, cancel := context.WithTimeout(ctx, 3*r.cfg.LeaseTTL+benchenv.ProbeTimeout)
	defer cancel()
	resp, err := r.Etcd.Get(rctx, r.Layout.Term())
	if err != nil {
		return 0, 0, err
	}
	from := resp.Header.Revision + 1
	wctx := clientv3.WithRequireLeader(rctx)
	termCh := r.Etcd.Watch(wctx, r.Layout.Term(), clientv3.WithRev(from))
	appliedCh := r.Etcd.Watch(wctx, r.Layout.Applied(), clientv3.WithRev(from))

	// One writer keeps operations pending throughout.
	stopWriter := r.keepWriting(rctx)
	defer stopWriter()

	type event struct {
		rev  int64
		when time.Time
	}
	var termRev int64
	var termAt time.Time
	var applied []event
	t0 := time.Now()
	lead.Signal(sig)
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
				r.Reap(lead)
				return termAt.Sub(t0), a.when.Sub(t0), nil
			}
		}
	}
}

// keepWriting submits operations from one writer until the function it
// returns is called, which waits for the writer to stop.
func (r *runner) keepWriting(ctx context.Context) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; wctx.Err() == nil; i++ {
			_, _ = r.Callers[0].Set(wctx, r.Key("k", 0, i), r.Value, 0)
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
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
