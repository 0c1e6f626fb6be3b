package cluster

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what a process uses, read from /proc/PID/ (and, for a node
// with a monitor, its /metrics).
type Usage struct {
	// RSS is the resident set size in bytes (VmRSS).
	RSS int64
	// Threads is the number of OS threads.
	Threads int
	// FDs is the number of open file descriptors.
	FDs int
	// Goroutines is go_goroutines from the node's /metrics; -1 when it
	// could not be read (no monitor, or the process is not a node).
	Goroutines int
}

// ProcUsage reads the usage of process pid from /proc.
func ProcUsage(pid int) (Usage, error) {
	u := Usage{Goroutines: -1}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			kb, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return u, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			u.RSS = kb << 10
		case "Threads":
			if u.Threads, err = strconv.Atoi(fs[0]); err != nil {
				return u, fmt.Errorf("threads %q: %w", v, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return u, err
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return u, err
	}
	u.FDs = len(ents)
	return u, nil
}

// NodeUsage reads a running node's usage, with its goroutines when it has a
// monitor.
func (c *Cluster) NodeUsage(ctx context.Context, n *Node) (Usage, error) {
	u, err := ProcUsage(n.Pid())
	if err != nil || n.MonitorAddr == "" {
		return u, err
	}
	if g, err := goroutines(ctx, n.MonitorAddr); err == nil {
		u.Goroutines = g
	}
	return u, nil
}

// goroutines reads go_goroutines from the /metrics of a node's monitor.
func goroutines(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s/metrics has no go_goroutines", addr)
}

// MemberDB is an etcd member's database size and revision.
type MemberDB struct {
	Size     int64
	Revision int64
}

// MemberDBSize asks member m for its database size and revision.
func (c *Cluster) MemberDBSize(ctx context.Context, m *Member) (MemberDB, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Client.Status(ctx, m.Endpoint())
	if err != nil {
		return MemberDB{}, err
	}
	return MemberDB{Size: resp.DbSize, Revision: resp.Header.Revision}, nil
}
