package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/election"
)

// child is a `coordinator serve` process started by the run.
type child struct {
	id   string
	cmd  *exec.Cmd
	done chan struct{}
	out  *tailBuffer
}

// serveCommand returns the command that runs a node with args.
func (e *env) serveCommand(args []string) (*exec.Cmd, error) {
	if e.cfg.Serve != nil {
		return e.cfg.Serve(args), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable to run nodes: %w", err)
	}
	return exec.Command(exe, args...), nil
}

// startChild starts a node as a child process in the run's namespace.
func (e *env) startChild(id string) (*child, error) {
	args := []string{
		"serve", "--endpoints", strings.Join(e.endpoints, ","), "--namespace", e.ns,
		"--memcached", strings.Join(e.cfg.Memcached, ","), "--node-id", id,
		"--lease-ttl", e.cfg.LeaseTTL.String(), "--log-level", "info",
	}
	cmd, err := e.serveCommand(args)
	if err != nil {
		return nil, err
	}
	c := &child{id: id, cmd: cmd, done: make(chan struct{}), out: &tailBuffer{max: 16 << 10}}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if cmd.SysProcAttr == nil {
		// Do not outlive the run if it is killed.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node %s: %w", id, err)
	}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	e.mu.Lock()
	e.children = append(e.children, c)
	e.mu.Unlock()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// signal sends sig to the child's pid, unless it has exited.
func (c *child) signal(sig syscall.Signal) {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(sig)
	}
}

// exited reports whether the child has exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// describe returns the end of the child's output, for error messages.
func (c *child) describe() string {
	return fmt.Sprintf("node %s (pid %d) output:\n%s", c.id, c.pid(), c.out.String())
}

// forget removes c from the children to stop at the end.
func (e *env) forget(c *child) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, x := range e.children {
		if x == c {
			e.children = append(e.children[:i], e.children[i+1:]...)
			return
		}
	}
}

// stopChild stops c gracefully (SIGTERM), killing it if it does not exit.
func (e *env) stopChild(c *child) {
	stopProcess(c, childStopTimeout)
	e.forget(c)
}

// stopChildren stops every child still running, each by its pid.
func (e *env) stopChildren() {
	e.mu.Lock()
	cs := e.children
	e.children = nil
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopProcess(c, childStopTimeout)
		}()
	}
	wg.Wait()
}

// waitCampaigning waits until n nodes campaign (hold election keys); it
// fails early if one of cs exits.
func (e *env) waitCampaigning(ctx context.Context, n int, cs ...*child) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- waitPrefixCount(ctx, e.cli, e.layout.Election()+"/", func(c int64) bool { return c >= int64(n) })
	}()
	exited := make(chan *child, len(cs))
	stop := make(chan struct{})
	defer close(stop)
	for _, c := range cs {
		go func() {
			select {
			case <-c.done:
				exited <- c
			case <-stop:
			}
		}()
	}
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("%d nodes did not campaign: %w", n, err)
		}
		return nil
	case c := <-exited:
		cancel()
		<-errc
		return fmt.Errorf("node exited early: %s", c.describe())
	}
}

// leader returns the child that leads, among cs.
func (e *env) leader(ctx context.Context, cs []*child) (*child, error) {
	st, err := election.Observe(ctx, e.cli, e.layout)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.id == st.Leader {
			return c, nil
		}
	}
	return nil, fmt.Errorf("leader is %q, not one of the nodes started", st.Leader)
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

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stopProcess sends SIGTERM to c and waits up to timeout, then kills it.
func stopProcess(c *child, timeout time.Duration) {
	c.signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.signal(syscall.SIGKILL)
		<-c.done
	}
}
