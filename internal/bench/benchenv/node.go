package benchenv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// inProcNode is a coordinator node run in this process.
type inProcNode struct {
	stats  *applier.Stats
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan error
}

// nodeLog writes the in-process node's log lines to the progress stream.
type nodeLog struct{ e *Env }

func (l nodeLog) Write(p []byte) (int, error) {
	l.e.Progressf("  node: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// StartNode starts an in-process node (with its own etcd connection) unless
// one runs. It does not wait for the node to lead: callers that need it
// applying wait for it (see Probe).
func (e *Env) StartNode(ctx context.Context) error {
	e.mu.Lock()
	if e.node != nil {
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	cli, err := e.dial(ctx)
	if err != nil {
		return err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &inProcNode{stats: &applier.Stats{}, cli: cli, cancel: cancel, done: make(chan error, 1)}
	go func() {
		n.done <- node.Run(nctx, node.Config{
			Etcd: cli, Layout: e.Layout, NodeID: "bench-inproc", LeaseTTL: e.cfg.LeaseTTL,
			Memcached: e.cfg.Memcached, Stats: n.stats,
			// Its warnings (retries, lost leadership) explain stalls.
			Logger: slog.New(slog.NewTextHandler(nodeLog{e}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	}()
	e.mu.Lock()
	e.node = n
	e.mu.Unlock()
	return nil
}

// StopNode stops the in-process node gracefully.
func (e *Env) StopNode() {
	e.mu.Lock()
	n := e.node
	e.node = nil
	e.mu.Unlock()
	if n == nil {
		return
	}
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(ChildStopTimeout):
		e.Progressf("in-process node did not stop within %s", ChildStopTimeout)
	}
	n.cli.Close()
}

// NodeCounters are the in-process node's applier counters.
type NodeCounters struct{ Applied, Skipped, Commits, Batches, Watches uint64 }

// Sub returns the counts since o.
func (c NodeCounters) Sub(o NodeCounters) NodeCounters {
	return NodeCounters{
		c.Applied - o.Applied, c.Skipped - o.Skipped, c.Commits - o.Commits, c.Batches - o.Batches, c.Watches - o.Watches,
	}
}

// String describes the applier's work.
func (c NodeCounters) String() string {
	per := 0.0
	if c.Commits > 0 {
		per = float64(c.Batches) / float64(c.Commits)
	}
	return fmt.Sprintf("the node wrote %d operations to memcached, skipped %d, in %d etcd commits "+
		"(%.1f batches per commit), reading %d watches",
		c.Applied, c.Skipped, c.Commits, per, c.Watches)
}

// NodeStats returns the in-process node's counters, zero when none runs.
func (e *Env) NodeStats() NodeCounters {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.node == nil {
		return NodeCounters{}
	}
	s := e.node.stats
	return NodeCounters{
		Applied: s.Applied.Load(), Skipped: s.Skipped.Load(), Commits: s.Commits.Load(),
		Batches: s.Batches.Load(), Watches: s.Watches.Load(),
	}
}
