package faults

import (
	"context"
	"flag"
	"sync"
	"time"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/integration/cluster"
)

var (
	flagSoak      = flag.Bool("faults.soak", false, "TestRandomFaults samples every process's memory, goroutines and open files, and etcd's db size, and the checker flags growth (rule leak)")
	flagSoakEvery = flag.Duration("faults.soak-every", time.Minute, "how often -faults.soak samples")
)

// soaker samples the cluster's processes for a soak run.
type soaker struct {
	s    *scenario
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples []checker.Sample
	// threadsOnly tells that some node has no monitor, so its threads are
	// recorded in place of its goroutines.
	threadsOnly bool
}

// startSoak samples every process at once, then every interval until
// finish.
func (s *scenario) startSoak(every time.Duration) *soaker {
	k := &soaker{s: s, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(k.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			k.sample()
			select {
			case <-k.stop:
				return
			case <-t.C:
			}
		}
	}()
	return k
}

// finish stops sampling and returns the samples.
func (k *soaker) finish() []checker.Sample {
	close(k.stop)
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]checker.Sample(nil), k.samples...)
}

func (k *soaker) add(at int64, process, metric string, v float64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.samples = append(k.samples, checker.Sample{At: at, Process: process, Metric: metric, Value: v})
}

// sample reads every running node's and member's usage and every member's
// db size. A process that is down (a fault) is skipped this time.
func (k *soaker) sample() {
	s := k.s
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	at := s.rec.Now()
	for _, n := range s.c.Nodes {
		if !cluster.Running(n.Process) {
			continue
		}
		u, err := s.c.NodeUsage(ctx, n)
		if err != nil {
			continue
		}
		k.add(at, n.ID, checker.MetricRSS, float64(u.RSS))
		k.add(at, n.ID, checker.MetricFDs, float64(u.FDs))
		switch {
		case u.Goroutines >= 0:
			k.add(at, n.ID, checker.MetricGoroutines, float64(u.Goroutines))
		case n.MonitorAddr == "":
			k.add(at, n.ID, checker.MetricThreads, float64(u.Threads))
			k.mu.Lock()
			k.threadsOnly = true
			k.mu.Unlock()
		}
		// A node whose /metrics did not answer this time (it was paused,
		// say) has no goroutine sample this minute.
	}
	for _, m := range s.c.Members {
		if !cluster.Running(m.Proc) {
			continue
		}
		name := "etcd-" + m.Name
		u, uerr := cluster.ProcUsage(m.Proc.Pid())
		if uerr == nil {
			k.add(at, name, checker.MetricMemberRSS, float64(u.RSS))
			k.add(at, name, checker.MetricFDs, float64(u.FDs))
			k.add(at, name, checker.MetricThreads, float64(u.Threads))
		}
		if db, err := s.c.MemberDBSize(ctx, m); err == nil && db.Revision > 0 {
			k.add(at, name, checker.MetricDBBytesPerRev, float64(db.Size)/float64(db.Revision))
			if uerr == nil {
				k.add(at, name, checker.MetricRSSBytesPerRev, float64(u.RSS)/float64(db.Revision))
			}
		}
	}
}
