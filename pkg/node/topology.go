package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/retry"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/restore"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// localTopology is the topology of the node's flags: Memcached (each
// "host:port" or "host:port=weight") spread by Distribution.
func (c *Config) localTopology() (topology.Topology, error) {
	t := topology.Topology{Distribution: c.Distribution}
	for _, a := range c.Memcached {
		s, err := hashring.ParseServer(a)
		if err != nil {
			return topology.Topology{}, config.Errorf("node", "Memcached", "%w", err)
		}
		t.Servers = append(t.Servers, s)
	}
	if err := t.Validate(); err != nil {
		var fe *config.FieldError
		if errors.As(err, &fe) {
			field := map[string]string{"Distribution": "Distribution", "Servers": "Memcached"}[fe.Field]
			return topology.Topology{}, config.Errorf("node", field, "%s", fe.Rule)
		}
		return topology.Topology{}, err
	}
	return t, nil
}

// ensureTopology checks the node's topology against the namespace's in
// etcd, writing it on a namespace without one, and retries etcd's failures
// until ctx ends. A mismatch is logged and returned: the node must not
// lead with servers the other nodes do not share.
func ensureTopology(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, local topology.Topology, log *slog.Logger) (topology.Topology, error) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		stored, err := topology.Ensure(ctx, cli, l, local)
		if errors.Is(err, topology.ErrMismatch) && matchesApplied(ctx, cli, l, local) {
			log.Info("memcached topology: this node's servers are the applied ones; it moves the keys to etcd's when it wins", "topology", stored.String())
			return stored, nil
		}
		switch {
		case err == nil:
			log.Info("memcached topology", "topology", stored.String())
			return stored, nil
		case errors.Is(err, topology.ErrMismatch), errors.Is(err, topology.ErrCorrupt), errors.Is(err, config.ErrBadConfig):
			log.Error("refusing to lead: memcached topology", "err", err)
			return topology.Topology{}, err
		case ctx.Err() != nil:
			return topology.Topology{}, ctx.Err()
		}
		log.Warn("reading the memcached topology; retrying", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return topology.Topology{}, ctx.Err()
		}
	}
}

// matchesApplied reports whether local is the namespace's applied
// topology, or the one a change under way moves keys to: a node with
// those servers may lead, and takes etcd's topology when it wins.
func matchesApplied(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, local topology.Topology) bool {
	app, found, err := topology.ReadApplied(ctx, cli, l)
	if err != nil || !found {
		return false
	}
	return local.Diff(app.Applied) == "" || (app.To != nil && local.Diff(*app.To) == "")
}

// switchSelector is a memcache.ServerSelector whose ring is switched when
// the leader takes a new topology.
type switchSelector struct {
	ring atomic.Pointer[hashring.Ring]
}

func newSwitchSelector(t topology.Topology) (*switchSelector, error) {
	s := &switchSelector{}
	return s, s.set(t)
}

// set switches to t's ring.
func (s *switchSelector) set(t topology.Topology) error {
	r, err := hashring.New(t.Ring())
	if err != nil {
		return err
	}
	s.ring.Store(r)
	return nil
}

// PickServer returns key's server in the current ring.
func (s *switchSelector) PickServer(key string) (net.Addr, error) {
	return s.ring.Load().PickServer(key)
}

// Each calls f with every server of the current ring.
func (s *switchSelector) Each(f func(net.Addr) error) error { return s.ring.Load().Each(f) }

// ServerName returns the configured address of addr in the current ring
// (memfence.ServerNamer).
func (s *switchSelector) ServerName(addr net.Addr) string { return s.ring.Load().ServerName(addr) }

// topoLeader keeps a leader on the namespace's topology. When the node
// wins, and each time the topology changes while it leads, the topology is
// taken between rounds (see lifecycle): the applier is stopped (a round
// cut short is written again by the next applier's replay head), the keys
// the change moves are moved (topology.Migrate, which records the topology
// as applied), the selector is switched, and the applier runs again.
//
// Restores of restarted servers (Config.RestoreOnRestart) are made between
// rounds the same way (see requestRestore).
type topoLeader struct {
	cfg    Config
	sel    *switchSelector
	mw     *memfence.Writer
	local  topology.Topology // what the node writes with: its flags, then each topology it took
	refuse func(error)

	mu        sync.Mutex
	cancelRun context.CancelFunc // stops the rounds under way, nil between them
	restores  []string           // servers to restore before the next rounds
}

// requestRestore asks for addr's keys to be written back (package
// restore) before the next round: the rounds under way are stopped.
func (tl *topoLeader) requestRestore(addr string) {
	tl.mu.Lock()
	tl.restores = append(tl.restores, addr)
	cancel := tl.cancelRun
	tl.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// restorePending writes back the keys of every server asked for, retrying
// failures while the leadership lasts.
func (tl *topoLeader) restorePending(l *election.Leadership) error {
	ctx := l.Context()
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		tl.mu.Lock()
		addrs := tl.restores
		tl.restores = nil
		tl.mu.Unlock()
		if len(addrs) == 0 {
			return nil
		}
		for i, addr := range slices.Compact(addrs) {
			start := time.Now()
			res, err := restore.Restore(ctx, tl.cfg.Etcd, tl.cfg.Layout, l, tl.mw, addr)
			if errors.Is(err, election.ErrNotLeader) || ctx.Err() != nil {
				return err
			}
			if err != nil {
				tl.cfg.Logger.Warn("restoring a restarted memcached server; retrying", "server", addr, "err", err)
				tl.mu.Lock()
				tl.restores = append(tl.restores, addrs[i:]...)
				tl.mu.Unlock()
				if !retry.Sleep(ctx, backoff.Next()) {
					return ctx.Err()
				}
				break
			}
			tl.cfg.Logger.Info("memcached server restored", "server", addr, "records", res.Records,
				"restored", res.Restored, "newer_there", res.Newer, "expired", res.Expired, "took", time.Since(start))
		}
	}
}

// take checks the namespace's topology when the node wins and moves keys
// to it when it is not the applied one yet, retrying etcd's and memcached's
// failures while the leadership lasts. It returns the revision the
// topology was read at, and a *topology.MismatchError (after refusing)
// when the node's servers match neither the topology nor the applied one.
func (tl *topoLeader) take(l *election.Leadership) (int64, error) {
	ctx := l.Context()
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		rev, err := tl.takeOnce(ctx, l)
		switch {
		case err == nil:
			return rev, nil
		case errors.Is(err, topology.ErrMismatch):
			tl.refuse(err)
			return 0, err
		case errors.Is(err, election.ErrNotLeader), ctx.Err() != nil:
			return 0, err
		}
		tl.cfg.Logger.Warn("taking the memcached topology; retrying", "err", err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return 0, ctx.Err()
		}
	}
}

// takeOnce is one attempt of take.
func (tl *topoLeader) takeOnce(ctx context.Context, l *election.Leadership) (int64, error) {
	cli, lay, log := tl.cfg.Etcd, tl.cfg.Layout, tl.cfg.Logger
	stored, rev, err := topology.Read(ctx, cli, lay)
	if errors.Is(err, topology.ErrNotFound) {
		log.Warn("the memcached topology was deleted from etcd; keeping this node's")
		return rev, nil
	} else if err != nil {
		return 0, fmt.Errorf("node: read the memcached topology: %w", err)
	}
	app, found, err := topology.ReadApplied(ctx, cli, lay)
	if err != nil {
		return 0, err
	}
	if !found {
		// Keys were written with what this node wrote with, if it led
		// already; with the topology, if no leader took one yet.
		app = topology.Applied{Applied: stored}
		if tl.local.Epoch != 0 {
			app.Applied = tl.local
		}
	}
	matches := tl.local.Diff(stored) == "" || tl.local.Diff(app.Applied) == "" || (app.To != nil && tl.local.Diff(*app.To) == "")
	if !matches {
		return 0, &topology.MismatchError{Local: tl.local, Stored: stored, Reason: tl.local.Diff(stored)}
	}
	migrate := func(from, to topology.Topology, cleaned bool) error {
		log.Info("memcached topology changed: moving keys", "from", from.String(), "to", to.String(), "term", l.Term)
		start := time.Now()
		res, err := topology.Migrate(ctx, topology.MigrateConfig{
			Etcd: cli, Layout: lay, Lead: l, From: from, To: to, Cleaned: cleaned, Records: tl.cfg.RestoreOnRestart,
			Timeout: tl.cfg.MemcachedTimeout, Stats: tl.cfg.MemcachedStats, Logger: log,
		})
		if err != nil {
			return err
		}
		attrs := []any{"topology", to.String(), "recorded", res.Recorded, "listed", res.Listed, "moved", res.Moved,
			"newer_at_destination", res.Newer, "cleaned", res.Cleaned, "unmoved", res.UnmovedCount,
			"unreachable", res.Unreachable, "listing_short", res.ListingShort, "took", time.Since(start)}
		if res.UnmovedCount > 0 || len(res.ListingShort) > 0 {
			// Each unmoved key was logged; the change record names them.
			log.Error("memcached topology applied, with keys left on their old servers or not listed: see `coordinator topology show`", attrs...)
			return nil
		}
		log.Info("memcached topology applied", attrs...)
		return nil
	}
	if app.To != nil {
		if err := migrate(app.Applied, *app.To, app.Cleaned); err != nil {
			return 0, err
		}
		app = topology.Applied{Applied: *app.To}
	}
	switch {
	case app.Applied.Diff(stored) != "" || app.Applied.Epoch != stored.Epoch:
		if err := migrate(app.Applied, stored, false); err != nil {
			return 0, err
		}
	case !found:
		if err := topology.RecordApplied(ctx, cli, lay, l.Guard(), stored); err != nil {
			return 0, err
		}
	}
	if err := tl.sel.set(stored); err != nil {
		return 0, err
	}
	tl.local = stored
	return rev, nil
}

// runWatched runs run once, watching the topology from revision rev+1:
// run's context is cancelled when the topology changes (changed reports
// it) or a restore is asked for (restore reports one waiting once run
// returned; one asked for before run starts cancels it at once). err is
// run's.
func (tl *topoLeader) runWatched(l *election.Leadership, rev int64, run func(context.Context) error) (changed, restore bool, err error) {
	ctx, cancel := context.WithCancel(l.Context())
	tl.mu.Lock()
	tl.cancelRun = cancel
	restore = len(tl.restores) > 0
	tl.mu.Unlock()
	if restore {
		cancel()
	}
	var topoChanged atomic.Bool
	wait := watchTopology(ctx, tl.cfg.Etcd, tl.cfg.Layout, tl.local, rev, tl.cfg.Logger, func() {
		topoChanged.Store(true)
		cancel()
	})
	err = run(ctx)
	cancel()
	wait()
	tl.mu.Lock()
	tl.cancelRun = nil
	restore = len(tl.restores) > 0
	tl.mu.Unlock()
	return topoChanged.Load(), restore, err
}

// changedFrom reports whether stored is another topology than cur: other
// servers or distribution, or another epoch.
func changedFrom(cur, stored topology.Topology) bool {
	return cur.Diff(stored) != "" || (cur.Epoch != 0 && cur.Epoch != stored.Epoch)
}

// watchTopology watches etcd's topology from revision rev+1 until ctx ends
// and calls changed once it is another than cur (a topology set while the
// node leads). It returns a func that waits for it to stop.
func watchTopology(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, cur topology.Topology, rev int64, log *slog.Logger, changed func()) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
		for ctx.Err() == nil {
			for resp := range cli.Watch(clientv3.WithRequireLeader(ctx), l.Topology(), clientv3.WithRev(rev+1)) {
				if err := resp.Err(); err != nil {
					log.Debug("watching the memcached topology", "err", err)
					break
				}
				for _, ev := range resp.Events {
					rev = ev.Kv.ModRevision
					if ev.Type != clientv3.EventTypePut {
						log.Warn("the memcached topology was deleted from etcd; keeping this node's")
						continue
					}
					stored, err := topology.Decode(ev.Kv.Value)
					if err != nil {
						log.Error("the memcached topology in etcd does not decode; keeping this node's", "err", err)
						continue
					}
					if changedFrom(cur, stored) {
						changed()
						return
					}
				}
			}
			// The watch ended (compaction, etcd restarting): read again,
			// and watch from there.
			if !retry.Sleep(ctx, backoff.Next()) {
				return
			}
			stored, r, err := topology.Read(ctx, cli, l)
			if err == nil && changedFrom(cur, stored) {
				changed()
				return
			}
			if err == nil {
				rev = r
			}
		}
	})
	return wg.Wait
}
