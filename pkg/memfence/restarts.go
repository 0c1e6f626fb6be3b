package memfence

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ServerStats is what a memcached server says of itself in its "stats".
type ServerStats struct {
	// Addr is the server's address, resolved.
	Addr string
	// Name is the server's address as configured (see ServerError.Server).
	Name string
	// Pid is memcached's process id.
	Pid int
	// Uptime is how long the process has run.
	Uptime time.Duration
	// CurrItems is the number of items it holds.
	CurrItems uint64
	// Evictions counts the unexpired items it removed to make room since
	// it started: a key missing from a server that evicted none was not
	// evicted.
	Evictions uint64
}

// Restart is a server found running as another process than when last
// checked: every item it held is gone.
type Restart struct {
	// Addr is the server's address.
	Addr string
	// Before and After are its stats at the check before and at this one.
	Before, After ServerStats
}

// Stats counts what a Writer noticed of its servers, and what the
// leader's changes of topology did with their keys. Its zero value is
// ready; it may be shared with an exporter of metrics.
type Stats struct {
	// Restarts counts servers found restarted (see Writer.CheckRestarts),
	// of every server; ServerRestarts counts them by server. AddRestart
	// adds to both.
	Restarts atomic.Uint64
	// RestartChecks counts the checks of every server's stats that
	// completed.
	RestartChecks atomic.Uint64
	// MovedKeys counts the keys changes of topology moved to their new
	// server (see topology.Migrate).
	MovedKeys atomic.Uint64
	// UnmovedKeys counts the keys changes of topology could not move:
	// each stayed on its old server, and is named in the change record.
	UnmovedKeys atomic.Uint64

	mu             sync.Mutex
	serverRestarts map[string]uint64 // by ServerStats.Name
}

// ServerRestarts returns the restarts counted of each server, by its
// address as configured (ServerStats.Name); a server never found restarted
// is left out. The counts add up to Restarts.
func (s *Stats) ServerRestarts() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.serverRestarts)
}

// AddRestart counts a restart of server (its address as configured): in
// Restarts and in its count of ServerRestarts. CheckRestarts calls it for
// each restart it finds.
func (s *Stats) AddRestart(server string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serverRestarts == nil {
		s.serverRestarts = make(map[string]uint64)
	}
	s.serverRestarts[server]++
	s.Restarts.Add(1)
}

// restartWatch holds the stats last seen of each server.
type restartWatch struct {
	mu   sync.Mutex
	last map[string]ServerStats
}

// ServerStats reads the stats of every server, in the selector's order.
func (w *Writer) ServerStats(ctx context.Context) ([]ServerStats, error) {
	var out []ServerStats
	var errs []error
	_ = w.servers.Each(func(addr net.Addr) error {
		st, err := w.serverStats(ctx, addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("memfence: stats of %s: %w", addr, err))
			return nil
		}
		out = append(out, st)
		return nil
	})
	return out, errors.Join(errs...)
}

// CheckRestarts reads every server's stats and returns the servers that
// restarted since the Writer last read theirs: another pid, or an uptime
// shorter than the time that passed would allow. The first check of a
// server only records it. A server that does not answer is reported in the
// error and checked again next time; the others are still checked.
func (w *Writer) CheckRestarts(ctx context.Context) ([]Restart, error) {
	stats, err := w.ServerStats(ctx)
	w.watch.mu.Lock()
	defer w.watch.mu.Unlock()
	if w.watch.last == nil {
		w.watch.last = make(map[string]ServerStats)
	}
	var restarts []Restart
	for _, st := range stats {
		before, seen := w.watch.last[st.Addr]
		w.watch.last[st.Addr] = st
		if seen && (st.Pid != before.Pid || st.Uptime < before.Uptime) {
			restarts = append(restarts, Restart{Addr: st.Addr, Before: before, After: st})
		}
	}
	if w.stats != nil {
		for _, r := range restarts {
			w.stats.AddRestart(r.After.Name)
		}
		if err == nil {
			w.stats.RestartChecks.Add(1)
		}
	}
	return restarts, err
}

// serverStats sends "stats" to addr on a pipeline connection.
func (w *Writer) serverStats(ctx context.Context, addr net.Addr) (ServerStats, error) {
	if err := ended(ctx); err != nil {
		return ServerStats{}, err
	}
	cn, err := w.pipes.get(addr)
	if err != nil {
		return ServerStats{}, err
	}
	healthy := false
	defer func() { w.pipes.release(addr, cn, healthy) }()
	if err := cn.nc.SetDeadline(time.Now().Add(w.pipes.timeout)); err != nil {
		return ServerStats{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Now()) })
	defer stop()
	if _, err := cn.rw.WriteString("stats\r\n"); err != nil {
		return ServerStats{}, err
	}
	if err := cn.rw.Flush(); err != nil {
		return ServerStats{}, err
	}
	st, err := parseStats(cn.rw.Reader)
	if err != nil {
		return ServerStats{}, err
	}
	st.Addr, st.Name = addr.String(), w.serverName(addr)
	healthy = stop()
	return st, nil
}

// parseStats reads a "stats" reply up to its END.
func parseStats(r *bufio.Reader) (ServerStats, error) {
	var st ServerStats
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ServerStats{}, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			if st.Pid == 0 {
				return ServerStats{}, errors.New("stats without a pid")
			}
			return st, nil
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "STAT" {
			return ServerStats{}, fmt.Errorf("unexpected stats line %q", line)
		}
		switch f[1] {
		case "pid":
			st.Pid, _ = strconv.Atoi(f[2])
		case "uptime":
			s, _ := strconv.ParseInt(f[2], 10, 64)
			st.Uptime = time.Duration(s) * time.Second
		case "curr_items":
			st.CurrItems, _ = strconv.ParseUint(f[2], 10, 64)
		case "evictions":
			st.Evictions, _ = strconv.ParseUint(f[2], 10, 64)
		}
	}
}
