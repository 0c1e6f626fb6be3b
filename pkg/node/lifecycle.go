package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// lifecycle is what a node starts and stops as it campaigns, wins and loses
// leadership, one method per phase:
//
// Standby (startStandby), from Run's start and again after each stepping
// down: a standby (applier.Standby) follows the pending batches while the
// node campaigns, so that it holds them when the node wins. Run stops the
// last one when it returns (stopStandby).
//
// Leading (lead, election.Run's callback), when the node wins, in order:
//
//  0. check the term: beyond Config.MaxTerm no item can carry it, and the
//     node refuses to lead (ending Run); close to it, it warns;
//  1. note the leadership: with Config.RestoreOnRestart, the applier keeps
//     the restore records of each commit under it;
//  2. take the topology (topoLeader.take), moving keys to it when it is not
//     the applied one yet. Its error ends leading here, before anything is
//     started: the standby keeps following for the next win, and a mismatch
//     ends Run too (topoLeader.refuse);
//  3. hand the standby over to the applier;
//  4. watch restarts (watchRestarts) until the leadership ends; with
//     Config.RestoreOnRestart each restart found asks for a restore;
//  5. apply until the leadership ends (apply), repeating:
//     a. restore the restarted servers asked for (topoLeader.restorePending);
//     b. run the applier, from the standby's state the first time and from
//     etcd after, until the leadership ends, the topology changes or a
//     restore is asked for (topoLeader.runWatched, runApplier);
//     c. take the topology again when it changed (as in 2);
//  6. step down.
//
// Stepping down (stepDown), once applying ended, in order:
//
//  1. wait for the restart watcher, which ends with the leadership;
//  2. stop the standby handed over, should applying have ended before
//     running it;
//  3. start a new standby.
type lifecycle struct {
	ctx  context.Context // Run's: the standbys follow until it ends
	cfg  Config
	acfg applier.Config
	mw   *memfence.Writer
	tl   *topoLeader
	// leading is the latest leadership won, under which the restore records
	// are kept (see Run's BeforeCommit).
	leading atomic.Pointer[election.Leadership]
	// standby follows the pending batches while the node campaigns; the
	// applier takes it over when the node wins.
	standby *applier.Standby
	// refuse logs why the node does not lead and ends Run with it.
	refuse func(error)
}

// lowTermHeadroom is the number of terms left below which a winning node
// warns that the namespace nears Config.MaxTerm.
const lowTermHeadroom = 1000

// startStandby is the standby phase: a standby starts following the
// pending batches.
func (lc *lifecycle) startStandby() {
	lc.standby = applier.StartStandby(lc.ctx, lc.acfg)
}

// stopStandby stops the standby when Run returns.
func (lc *lifecycle) stopStandby() {
	lc.standby.Stop()
}

// lead is the leading phase, then stepping down (see lifecycle for the
// order). It returns what ended leading: the error of taking the topology,
// or of applying.
func (lc *lifecycle) lead(l *election.Leadership) error {
	if l.Term > lc.cfg.MaxTerm {
		err := fmt.Errorf("node: %w: won term %d, the highest this node leads under is %d", memfence.ErrTermExhausted, l.Term, lc.cfg.MaxTerm)
		lc.refuse(err)
		return err
	}
	if left := lc.cfg.MaxTerm - l.Term; left < lowTermHeadroom {
		lc.cfg.Logger.Warn("the namespace's term nears the highest an item's flags hold; plan `coordinator topology reset-term` (every node stopped)",
			"term", l.Term, "max_term", lc.cfg.MaxTerm, "terms_left", left)
	}
	lc.leading.Store(l)
	rev, err := lc.tl.take(l)
	if err != nil {
		return err
	}
	handed := lc.standby
	restartWatch := lc.watchRestarts(l)
	err = lc.apply(l, rev, handed)
	lc.stepDown(handed, restartWatch)
	return err
}

// watchRestarts starts the restart watcher for l's leadership and returns
// a func that waits for it to end.
func (lc *lifecycle) watchRestarts(l *election.Leadership) (wait func()) {
	var restarted func(memfence.Restart)
	if lc.cfg.RestoreOnRestart {
		restarted = func(r memfence.Restart) { lc.tl.requestRestore(r.Addr) }
	}
	return watchRestarts(lc.mw, restartWatch{
		etcd: lc.cfg.Etcd, layout: lc.cfg.Layout, lead: l, interval: lc.cfg.RestartCheckInterval, log: lc.cfg.Logger,
		restarted: restarted,
	})
}

// apply runs the applier while the leadership lasts, watching the topology
// from revision rev+1. Before each run the restarted servers asked for are
// restored; a run ends when the leadership does, the topology changes (it
// is taken before the next run) or a restore is asked for. The first run
// starts from what handed holds, the later ones from etcd.
func (lc *lifecycle) apply(l *election.Leadership, rev int64, handed *applier.Standby) error {
	for {
		if err := lc.tl.restorePending(l); err != nil {
			return err
		}
		changed, restore, err := lc.tl.runWatched(l, rev, func(ctx context.Context) error {
			return runApplier(ctx, l, lc.acfg, handed, lc.cfg.Logger)
		})
		// A standby runs once (applier.Standby.Run): the later runs start
		// from etcd.
		handed = nil
		switch {
		case l.Context().Err() != nil, err != nil:
			// runApplier returns nil when its context ends: an error is its own.
			return err
		case changed:
			if rev, err = lc.tl.take(l); err != nil {
				return err
			}
		case !restore:
			return nil
		}
	}
}

// stepDown is the stepping down phase: the restart watcher is waited for,
// the standby handed over is stopped (a no-op once the applier ran it; it
// still follows when leading ended before the first run, in a restore),
// then a new standby follows for the next win.
func (lc *lifecycle) stepDown(handed *applier.Standby, waitRestartWatch func()) {
	waitRestartWatch()
	handed.Stop()
	lc.startStandby()
}

// runApplier runs the applier until ctx ends or the leadership does,
// starting from what standby holds when it is not nil, and restarting it
// after errors that do not end leadership (a broken watch, etcd hiccups).
func runApplier(ctx context.Context, l *election.Leadership, acfg applier.Config, standby *applier.Standby, log *slog.Logger) error {
	backoff := retry.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		var err error
		if standby != nil {
			err = standby.Run(ctx, l)
			standby = nil
		} else {
			err = applier.Run(ctx, acfg, l)
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, election.ErrNotLeader) || errors.Is(err, memfence.ErrFenced) {
			return err
		}
		log.Warn("applier stopped; restarting", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return nil
		}
	}
}
