package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/bench/benchenv"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// Measurement names of the memory scenario.
const (
	whatIdleRSS = "idle node, peak RSS (VmHWM)"
	whatRegsRSS = "node with registrations, RSS (VmRSS)"
	mib         = 1 << 20
)

func whatDrainRSS(n int) string { return fmt.Sprintf("leader draining %d ops, peak RSS (VmHWM)", n) }

// runMemory reads the resident memory of a node run as a child process
// (/proc/<pid>/status): idle, with many registrations, and its peak while
// it drains a backlog of MemoryBacklog/10 and of MemoryBacklog operations,
// each submitted while no node ran.
func (r *runner) runMemory(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioMemory}
	r.StopNode()
	r.StopChildren()
	if err := r.memoryIdle(ctx, sr); err != nil {
		return sr, err
	}
	sizes := []int{max(1, r.cfg.MemoryBacklog/10), r.cfg.MemoryBacklog}
	peaks := make([]int64, len(sizes))
	for i, n := range sizes {
		m, peak, err := r.memoryDraining(ctx, n)
		if err != nil {
			return sr, err
		}
		peaks[i] = peak
		sr.Measurements = append(sr.Measurements, m)
	}
	sr.addRatio(ratioMemoryBacklog, 0, Ratio{Value: ratio(float64(peaks[1]), float64(peaks[0]))})
	sr.notef("registrations are written as registration records under one shared lease " +
		"(the node does not read them; etcd holds them)")
	return sr, nil
}

// memoryIdle measures an idle node's peak memory, then its memory with
// Config.Registrations registrations written, and adds both to sr.
func (r *runner) memoryIdle(ctx context.Context, sr *ScenarioReport) error {
	idle, err := r.StartChild("bench-mem-idle")
	if err != nil {
		return err
	}
	if err := r.WaitCampaigning(ctx, 1, idle); err != nil {
		return err
	}
	if err := r.Probe(ctx); err != nil {
		return err
	}
	_, hwm, err := procStatus(idle.Pid())
	if err != nil {
		return err
	}
	sr.Measurements = append(sr.Measurements, memMeasurement(whatIdleRSS, 0, hwm))
	r.Progressf("  %-45s %6.1f MiB", whatIdleRSS, float64(hwm)/mib)

	lease, err := r.writeRegistrations(ctx, r.cfg.Registrations)
	if err != nil {
		return err
	}
	// The node answers with the registrations in place: one more probe.
	if err := r.Probe(ctx); err != nil {
		return err
	}
	rss, hwm, err := procStatus(idle.Pid())
	if err != nil {
		return err
	}
	m := memMeasurement(whatRegsRSS, int64(r.cfg.Registrations), rss)
	m.Note = fmt.Sprintf("%d registrations; VmHWM %.1f MiB", r.cfg.Registrations, float64(hwm)/mib)
	sr.Measurements = append(sr.Measurements, m)
	r.Progressf("  %-45s %6.1f MiB", whatRegsRSS, float64(rss)/mib)
	if _, err := r.Etcd.Revoke(ctx, lease); err != nil {
		return err
	}
	r.StopChild(idle)
	return nil
}

// memoryDraining submits a backlog of n operations while no node runs,
// then starts one and measures its peak memory until it has applied them.
func (r *runner) memoryDraining(ctx context.Context, n int) (m Measurement, peak int64, err error) {
	if err := r.Settle(ctx); err != nil {
		return m, 0, err
	}
	sub, last, err := r.submitBacklog(ctx, n)
	if err != nil {
		return m, 0, err
	}
	c, err := r.StartChild(fmt.Sprintf("bench-mem-%d", n))
	if err != nil {
		return m, 0, err
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	err = r.Client.WaitApplied(wctx, last)
	cancel()
	if err != nil {
		return m, 0, fmt.Errorf("wait for the backlog to be applied: %w; %s", err, c.Describe())
	}
	elapsed := time.Since(start)
	_, hwm, err := procStatus(c.Pid())
	if err != nil {
		return m, 0, err
	}
	m = memMeasurement(whatDrainRSS(n), sub.Ops, hwm)
	m.Seconds, m.OpsPerSec = elapsed.Seconds(), float64(sub.Ops)/elapsed.Seconds()
	r.Progressf("  %-45s %6.1f MiB (drained in %.1fs)", m.What, float64(hwm)/mib, elapsed.Seconds())
	r.StopChild(c)
	return m, hwm, nil
}

func memMeasurement(what string, ops, bytes int64) Measurement {
	return Measurement{What: what, Ops: ops, Value: float64(bytes) / mib, Unit: "MiB"}
}

// writeRegistrations writes n registration records of names "mem-<i>"
// under one lease, in transactions of 100, and returns the lease.
func (r *runner) writeRegistrations(ctx context.Context, n int) (clientv3.LeaseID, error) {
	grant, err := r.Etcd.Grant(ctx, int64(benchenv.RegistrationTTL/time.Second))
	if err != nil {
		return 0, err
	}
	val, err := json.Marshal(struct {
		registry.Holder
		TTLSeconds int64 `json:"ttl_seconds"`
	}{registry.CurrentProcess(), int64(benchenv.RegistrationTTL / time.Second)})
	if err != nil {
		return 0, err
	}
	r.Progressf("  writing %d registrations", n)
	const perTxn = 100
	for i := 0; i < n; i += perTxn {
		puts := make([]clientv3.Op, 0, perTxn)
		for j := i; j < min(n, i+perTxn); j++ {
			puts = append(puts, clientv3.OpPut(r.Layout.Reg(fmt.Sprintf("mem-%d", j)), string(val), clientv3.WithLease(grant.ID)))
		}
		if _, err := r.Etcd.Txn(ctx).Then(puts...).Commit(); err != nil {
			return 0, err
		}
	}
	return grant.ID, nil
}

// procStatus reads VmRSS and VmHWM (bytes) of pid from /proc.
func procStatus(pid int) (rss, hwm int64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, errors.New("no VmRSS/VmHWM in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, nil
}
