package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
func (e *env) runMemory(ctx context.Context) (*ScenarioReport, error) {
	sr := &ScenarioReport{Name: ScenarioMemory}
	e.stopNode()
	e.stopChildren()

	idle, err := e.startChild("bench-mem-idle")
	if err != nil {
		return sr, err
	}
	if err := e.waitCampaigning(ctx, 1, idle); err != nil {
		return sr, err
	}
	if err := e.probe(ctx); err != nil {
		return sr, err
	}
	_, hwm, err := procStatus(idle.pid())
	if err != nil {
		return sr, err
	}
	sr.Measurements = append(sr.Measurements, memMeasurement(whatIdleRSS, 0, hwm))
	e.progress("  %-45s %6.1f MiB", whatIdleRSS, float64(hwm)/mib)

	lease, err := e.writeRegistrations(ctx, e.cfg.Registrations)
	if err != nil {
		return sr, err
	}
	// The node answers with the registrations in place: one more probe.
	if err := e.probe(ctx); err != nil {
		return sr, err
	}
	rss, hwm, err := procStatus(idle.pid())
	if err != nil {
		return sr, err
	}
	m := memMeasurement(whatRegsRSS, int64(e.cfg.Registrations), rss)
	m.Note = fmt.Sprintf("%d registrations; VmHWM %.1f MiB", e.cfg.Registrations, float64(hwm)/mib)
	sr.Measurements = append(sr.Measurements, m)
	e.progress("  %-45s %6.1f MiB", whatRegsRSS, float64(rss)/mib)
	if _, err := e.cli.Revoke(ctx, lease); err != nil {
		return sr, err
	}
	e.stopChild(idle)

	sizes := []int{max(1, e.cfg.MemoryBacklog/10), e.cfg.MemoryBacklog}
	peaks := make([]int64, len(sizes))
	for i, n := range sizes {
		if err := e.settle(ctx); err != nil {
			return sr, err
		}
		sub, last, err := e.submitBacklog(ctx, n)
		if err != nil {
			return sr, err
		}
		c, err := e.startChild(fmt.Sprintf("bench-mem-%d", n))
		if err != nil {
			return sr, err
		}
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		err = e.client.WaitApplied(wctx, last)
		cancel()
		if err != nil {
			return sr, fmt.Errorf("wait for the backlog to be applied: %w; %s", err, c.describe())
		}
		elapsed := time.Since(start)
		_, hwm, err := procStatus(c.pid())
		if err != nil {
			return sr, err
		}
		peaks[i] = hwm
		m := memMeasurement(whatDrainRSS(n), sub.Ops, hwm)
		m.Seconds, m.OpsPerSec = elapsed.Seconds(), float64(sub.Ops)/elapsed.Seconds()
		sr.Measurements = append(sr.Measurements, m)
		e.progress("  %-45s %6.1f MiB (drained in %.1fs)", m.What, float64(hwm)/mib, elapsed.Seconds())
		e.stopChild(c)
	}
	sr.addRatio(ratioMemoryBacklog, 0, Ratio{Value: ratio(float64(peaks[1]), float64(peaks[0]))})
	sr.notef("registrations are written as registration records under one shared lease (the node does not read them; etcd holds them)")
	return sr, nil
}

func memMeasurement(what string, ops, bytes int64) Measurement {
	return Measurement{What: what, Ops: ops, Value: float64(bytes) / mib, Unit: "MiB"}
}

// writeRegistrations writes n registration records of names "mem-<i>"
// under one lease, in transactions of 100, and returns the lease.
func (e *env) writeRegistrations(ctx context.Context, n int) (clientv3.LeaseID, error) {
	grant, err := e.cli.Grant(ctx, int64(registrationTTL/time.Second))
	if err != nil {
		return 0, err
	}
	val, err := json.Marshal(struct {
		registry.Holder
		TTLSeconds int64 `json:"ttl_seconds"`
	}{registry.CurrentProcess(), int64(registrationTTL / time.Second)})
	if err != nil {
		return 0, err
	}
	e.progress("  writing %d registrations", n)
	const perTxn = 100
	for i := 0; i < n; i += perTxn {
		puts := make([]clientv3.Op, 0, perTxn)
		for j := i; j < min(n, i+perTxn); j++ {
			puts = append(puts, clientv3.OpPut(e.layout.Reg(fmt.Sprintf("mem-%d", j)), string(val), clientv3.WithLease(grant.ID)))
		}
		if _, err := e.cli.Txn(ctx).Then(puts...).Commit(); err != nil {
			return 0, err
		}
	}
	return grant.ID, nil
}
