package node

import (
	"cmp"
	"errors"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// DefaultRestartCheckInterval is how often the leader reads its memcached
// servers' stats when Config.RestartCheckInterval is zero.
const DefaultRestartCheckInterval = 5 * time.Second

// restartWatch is what watchRestarts needs besides the writer.
type restartWatch struct {
	etcd     *clientv3.Client
	layout   keyspace.Layout
	lead     *election.Leadership
	interval time.Duration
	log      *slog.Logger
	// restarted, when set, is called with each restart found, after it is
	// logged and before it is recorded.
	restarted func(memfence.Restart)
}

// watchRestarts checks the servers for restarts every interval until the
// leadership ends, logging each one and recording it in etcd (see
// topology.RecordRestarts), and returns a func that waits for it to stop.
// A restart that could not be recorded is recorded with the next check's.
func watchRestarts(mw *memfence.Writer, rw restartWatch) (wait func()) {
	ctx := rw.lead.Context()
	interval := cmp.Or(rw.interval, DefaultRestartCheckInterval)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var unrecorded []topology.RestartEvent
		for {
			rs, err := mw.CheckRestarts(ctx)
			if ctx.Err() != nil {
				return
			}
			for _, r := range rs {
				rw.log.Warn("memcached server restarted: the items it held are gone",
					"server", r.Addr, "old_pid", r.Before.Pid, "new_pid", r.After.Pid,
					"old_uptime", r.Before.Uptime, "uptime", r.After.Uptime, "items", r.After.CurrItems)
				if rw.restarted != nil {
					rw.restarted(r)
				}
				unrecorded = append(unrecorded, topology.RestartEvent{
					Server: r.Addr, OldPid: r.Before.Pid, NewPid: r.After.Pid, Time: time.Now().UTC().Truncate(time.Millisecond), Term: rw.lead.Term,
				})
			}
			if err != nil {
				rw.log.Debug("reading memcached stats", "err", err)
			}
			if len(unrecorded) > 0 {
				err := topology.RecordRestarts(ctx, rw.etcd, rw.layout, rw.lead.Guard(), unrecorded)
				switch {
				case err == nil:
					unrecorded = nil
				case errors.Is(err, election.ErrNotLeader) || ctx.Err() != nil:
					return
				default:
					rw.log.Warn("recording memcached restarts in etcd; will retry", "err", err)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return wg.Wait
}
