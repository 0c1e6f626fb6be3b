package testenv

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// Node is an in-process coordinator node run by a test.
type Node struct {
	Stats  *applier.Stats
	cancel context.CancelFunc
	done   chan error
}

// StartNode runs node.Run in a goroutine with cfg; Stats is filled in when
// nil. The node is stopped (gracefully) when the test ends.
func StartNode(t testing.TB, cfg node.Config) *Node {
	t.Helper()
	if cfg.Stats == nil {
		cfg.Stats = &applier.Stats{}
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Stats: cfg.Stats, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- node.Run(ctx, cfg) }()
	t.Cleanup(func() { n.Stop(t) })
	return n
}

// Stop stops the node gracefully and waits for it to return. Stopping a
// stopped node does nothing.
func (n *Node) Stop(t testing.TB) {
	t.Helper()
	n.cancel()
	select {
	case err, ok := <-n.done:
		if !ok {
			return // stopped already
		}
		if err != nil {
			t.Errorf("node returned: %v", err)
		}
		close(n.done)
	case <-time.After(30 * time.Second):
		t.Errorf("node did not stop within 30s")
	}
}

// Logger returns a logger that writes to stderr when COORDINATOR_TEST_LOG
// is set and discards otherwise.
func Logger() *slog.Logger {
	if os.Getenv("COORDINATOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Ctx returns a context cancelled when the test ends or after timeout.
func Ctx(t testing.TB, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
