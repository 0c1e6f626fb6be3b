package applier

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Standby follows the pending batches while its node campaigns, so that the
// node holds them when it wins, rather than starting to read then.
//
// A leader that starts reading reads etcd's history with a watch that starts
// in the past, and etcd serves such a watch only from its resync loop, which
// runs every 100 ms: up to 100 ms before a new leader sees its first batch.
// A standby opens that watch while the node campaigns, on the watermark and
// the ops range together, and keeps the batches the watermark does not
// cover yet (dropping those the leader applies as the watermark moves), at
// most Config.MaxInboxBatches of them. When the node wins, Run hands the
// batches held and the open, caught-up watch to the applier, which reads on
// from there. A standby that falls further behind than that drops what it
// holds; its node then reads the history when it wins, as without a
// standby. It follows again once at most half that many batches are
// pending: until then it counts them from time to time (etcd counts keys
// from its index), rather than opening its watch again, which would make
// etcd read the whole backlog from its history each time.
type Standby struct {
	cfg Config // with defaults
	bad error  // cfg's validation error
	// parent is the context StartStandby was given: the watch handed over
	// lives in it, not in the standby's own, which ends with the standby.
	parent context.Context
	cancel context.CancelFunc
	req    chan chan *followState
	done   chan struct{}
}

// followState is what a standby has read: the batches after the watermark
// wm, in token order, and the watch it reads on from, at revision next.
type followState struct {
	watch openWatch
	next  int64
	wm    tokenseq.Token
	items []pending
}

// errStandbyBehind means more batches are pending than a standby holds.
var errStandbyBehind = errors.New("applier: standby: more batches pending than it holds")

// StartStandby starts following the pending batches until ctx ends, Stop is
// called, or Run takes over. With an invalid cfg it follows nothing, and Run
// returns cfg's *config.FieldError.
func StartStandby(ctx context.Context, cfg Config) *Standby {
	bad := cfg.Validate()
	cfg = cfg.withDefaults()
	sctx, cancel := context.WithCancel(ctx)
	s := &Standby{
		cfg: cfg, bad: bad, parent: ctx, cancel: cancel,
		req: make(chan chan *followState), done: make(chan struct{}),
	}
	if bad != nil {
		close(s.done)
		return s
	}
	go s.run(sctx)
	return s
}

// Stop stops the standby and waits for it to end.
func (s *Standby) Stop() {
	s.cancel()
	<-s.done
	s.cfg.Stats.StandbyHeld.Store(0) // handed over, or dropped
	s.cfg.Stats.StandbyBehind.Store(false)
}

// Run stops the standby and runs the applier as Run does, starting from
// what the standby holds. It may be called once.
func (s *Standby) Run(ctx context.Context, lead *election.Leadership) error {
	var st *followState
	reply := make(chan *followState, 1)
	select {
	case s.req <- reply:
		st = <-reply
	case <-s.done:
	}
	s.Stop()
	if s.bad != nil {
		return s.bad
	}
	return run(ctx, s.cfg, lead, st)
}

func (s *Standby) run(ctx context.Context) {
	defer close(s.done)
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		handed, err := s.follow(ctx)
		if handed || ctx.Err() != nil {
			return
		}
		s.cfg.Stats.StandbyHeld.Store(0)
		s.cfg.Logger.Debug("standby stopped following; will try again", "err", err)
		behind := errors.Is(err, errStandbyBehind)
		if behind {
			s.cfg.Stats.StandbyBehind.Store(true)
		}
		for {
			wait := time.NewTimer(backoff.Next())
			select {
			case reply := <-s.req:
				wait.Stop()
				reply <- nil
				return
			case <-wait.C:
			case <-ctx.Done():
				wait.Stop()
				return
			}
			if !behind || s.backlogFits(ctx) {
				s.cfg.Stats.StandbyBehind.Store(false)
				break
			}
		}
	}
}

// backlogFits reports whether at most half the batches a standby holds are
// pending, or whether counting them failed (following again will tell).
func (s *Standby) backlogFits(ctx context.Context) bool {
	s.cfg.Stats.StandbyCounts.Add(1)
	resp, err := s.cfg.Etcd.Get(ctx, s.cfg.Layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	return err != nil || resp.Count <= int64(s.cfg.MaxInboxBatches/2)
}

// follow reads the watermark and the batches after it until Run takes them
// over (it reports true) or following fails.
func (s *Standby) follow(ctx context.Context) (bool, error) {
	layout := s.cfg.Layout
	wm, _, err := tokenseq.Watermark(ctx, s.cfg.Etcd, layout)
	if err != nil {
		return false, err
	}
	s.cfg.Stats.StandbyWatches.Add(1)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.parent))
	st := &followState{watch: openWatch{cancel: cancel}, next: max(wm.Revision, 1), wm: wm}
	// From the watermark key to the end of the ops range: the watermark, the
	// takeover mark and the batches, in one order (and the election's keys,
	// which sort between them and are skipped).
	st.watch.wch = watchPending(wctx, s.cfg, layout.Applied(), st.next)
	a := &applier{cfg: s.cfg, log: s.cfg.Logger, stats: s.cfg.Stats}
	a.stats.Watermark.Store(wm.Revision)
	for {
		select {
		case reply := <-s.req:
			reply <- st
			return true, nil
		case <-ctx.Done():
			cancel()
			return false, ctx.Err()
		case wr, ok := <-st.watch.wch:
			if !ok {
				cancel()
				return false, errors.New("applier: standby: watch closed")
			}
			if err := responseErr(wr); err != nil {
				cancel()
				return false, err
			}
			a.stats.seeRevision(wr.Header.Revision)
			if len(wr.Events) == 0 {
				continue
			}
			st.next = wr.Events[len(wr.Events)-1].Kv.ModRevision + 1
			err := a.absorb(st, wr.Events)
			s.cfg.Stats.StandbyHeld.Store(int64(len(st.items)))
			if err != nil {
				cancel()
				return false, err
			}
		}
	}
}

// absorb applies watch events to a standby's state: a newer watermark drops
// the batches it covers, a batch it does not cover is kept.
func (a *applier) absorb(st *followState, evs []*clientv3.Event) error {
	appliedKey := a.cfg.Layout.Applied()
	for _, ev := range evs {
		if string(ev.Kv.Key) != appliedKey {
			// Takeover marks are skipped: only the one this node writes when
			// it wins ends its replay head.
			st.items = a.appendEvents(st.items, []*clientv3.Event{ev}, st.wm, math.MaxInt64)
			continue
		}
		wm, err := tokenseq.ParseToken(string(ev.Kv.Value))
		if err != nil {
			return fmt.Errorf("applier: standby: watermark record: %w", err)
		}
		if !st.wm.Less(wm) {
			continue
		}
		st.wm = wm
		a.stats.Watermark.Store(wm.Revision)
		n := 0
		for n < len(st.items) && applied(wm, st.items[n]) {
			n++
		}
		if n > 0 {
			st.items = slices.Delete(st.items, 0, n)
		}
	}
	if len(st.items) > a.cfg.MaxInboxBatches {
		return errStandbyBehind
	}
	return nil
}
