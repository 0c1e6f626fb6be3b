package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
)

// KillMember kills an etcd member with SIGKILL and waits for it to exit.
func (c *Cluster) KillMember(m *Member) { m.Proc.Kill() }

// RestartMember starts a killed or stopped member again on its data
// directory and waits until it serves.
func (c *Cluster) RestartMember(ctx context.Context, m *Member) error {
	return restartAndWait(ctx, m.Proc, "etcdmember ready", c.cfg.StartTimeout)
}

// RestartNode starts a killed or stopped node again and waits until it
// runs.
func (c *Cluster) RestartNode(ctx context.Context, n *Node) error {
	return restartAndWait(ctx, n.Process, "node starting", c.cfg.StartTimeout)
}

// StopNode stops a node gracefully (SIGTERM) and waits for it to exit.
func (c *Cluster) StopNode(n *Node) { n.Stop(30 * time.Second) }

// Running reports whether a process has not exited.
func Running(p *harness.Process) bool {
	select {
	case <-p.Exited():
		return false
	default:
		return true
	}
}

func restartAndWait(ctx context.Context, p *harness.Process, ready string, timeout time.Duration) error {
	before := strings.Count(p.Output(), ready)
	p.Restart()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := poll(rctx, 20*time.Millisecond, func() bool {
		return strings.Count(p.Output(), ready) > before || !Running(p)
	})
	if err != nil {
		return fmt.Errorf("%s did not print %q after restart: %w", p.Name, ready, err)
	}
	if !Running(p) {
		return fmt.Errorf("%s exited after restart", p.Name)
	}
	return nil
}

// poll calls cond every interval until it returns true or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Poll calls cond every interval until it returns true or ctx ends.
func Poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	return poll(ctx, interval, cond)
}
