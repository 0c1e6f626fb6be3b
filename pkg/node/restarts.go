package node

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// DefaultRestartCheckInterval is how often the leader reads its memcached
// servers' stats when Config.RestartCheckInterval is zero.
const DefaultRestartCheckInterval = 5 * time.Second

// watchRestarts checks the servers for restarts every interval until ctx
// ends, logging each one, and returns a func that waits for it to stop. A
// restarted server has lost every item; nothing is rewritten.
func watchRestarts(ctx context.Context, mw *memfence.Writer, interval time.Duration, log *slog.Logger) (wait func()) {
	interval = cmp.Or(interval, DefaultRestartCheckInterval)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			rs, err := mw.CheckRestarts(ctx)
			if ctx.Err() != nil {
				return
			}
			for _, r := range rs {
				log.Warn("memcached server restarted: the items it held are gone",
					"server", r.Addr, "old_pid", r.Before.Pid, "new_pid", r.After.Pid,
					"old_uptime", r.Before.Uptime, "uptime", r.After.Uptime, "items", r.After.CurrItems)
			}
			if err != nil {
				log.Debug("reading memcached stats", "err", err)
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
