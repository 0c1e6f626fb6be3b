package benchenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/election"
)

// Child is a `coordinator serve` process started by the run.
type Child struct {
	id   string
	cmd  *exec.Cmd
	done chan struct{}
	out  *tailBuffer
}

// serveCommand returns the command that runs a node with args.
func (e *Env) serveCommand(args []string) (*exec.Cmd, error) {
	if e.cfg.Serve != nil {
		return e.cfg.Serve(args), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable to run nodes: %w", err)
	}
	return exec.Command(exe, args...), nil
}

// StartChild starts a node as a child process in the run's namespace.
func (e *Env) StartChild(id string) (*Child, error) {
	args := []string{
		"serve", "--endpoints", strings.Join(e.Endpoints, ","), "--namespace", e.Namespace,
		"--memcached", strings.Join(e.cfg.Memcached, ","), "--node-id", id,
		"--lease-ttl", e.cfg.LeaseTTL.String(), "--log-level", "info",
	}
	args = append(args, e.securityArgs()...)
	cmd, err := e.serveCommand(args)
	if err != nil {
		return nil, err
	}
	return e.startNode(id, cmd, e.childPassword())
}

// startNode starts cmd, a `coordinator serve`, as the child id, with the
// etcd password pw (if any) in its environment, its output kept.
func (e *Env) startNode(id string, cmd *exec.Cmd, pw string) (*Child, error) {
	if pw != "" {
		// Through the environment, not the command line, which any user
		// of the machine can read.
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, passwordEnv+"="+pw)
	}
	c := &Child{id: id, cmd: cmd, done: make(chan struct{}), out: &tailBuffer{max: 16 << 10}}
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

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the child's pid, unless it has exited.
func (c *Child) Signal(sig syscall.Signal) {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(sig)
	}
}

// CPUTime is the CPU time, user and system, the child used over its whole
// life; zero until it has exited.
func (c *Child) CPUTime() time.Duration {
	select {
	case <-c.done:
	default:
		return 0
	}
	if st := c.cmd.ProcessState; st != nil {
		return st.UserTime() + st.SystemTime()
	}
	return 0
}

// Output returns the end of what the child wrote to stdout and stderr.
func (c *Child) Output() string { return c.out.String() }

// Describe returns the end of the child's output, for error messages.
func (c *Child) Describe() string {
	return fmt.Sprintf("node %s (pid %d) output:\n%s", c.id, c.Pid(), c.out.String())
}

// forget removes c from the children to stop at the end.
func (e *Env) forget(c *Child) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, x := range e.children {
		if x == c {
			e.children = append(e.children[:i], e.children[i+1:]...)
			return
		}
	}
}

// StopChild stops c gracefully (SIGTERM), killing it if it does not exit.
func (e *Env) StopChild(c *Child) {
	stopProcess(c, ChildStopTimeout)
	e.forget(c)
}

// Reap waits for a signalled child to exit, killing it if it does not, and
// forgets it.
func (e *Env) Reap(c *Child) {
	select {
	case <-c.done:
	case <-time.After(ChildStopTimeout):
		c.Signal(syscall.SIGKILL)
		<-c.done
	}
	e.forget(c)
}

// StopChildren stops every child still running, each by its pid.
func (e *Env) StopChildren() {
	e.mu.Lock()
	cs := e.children
	e.children = nil
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopProcess(c, ChildStopTimeout)
		}()
	}
	wg.Wait()
}

// WaitCampaigning waits until n nodes campaign (hold election keys); it
// fails early if one of cs exits.
func (e *Env) WaitCampaigning(ctx context.Context, n int, cs ...*Child) error {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- waitPrefixCount(ctx, e.Etcd, e.Layout.Election()+"/", func(c int64) bool { return c >= int64(n) })
	}()
	exited := make(chan *Child, len(cs))
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
		return fmt.Errorf("node exited early: %s", c.Describe())
	}
}

// Leader returns the child that leads, among cs.
func (e *Env) Leader(ctx context.Context, cs []*Child) (*Child, error) {
	st, err := election.Observe(ctx, e.Etcd, e.Layout)
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

// stopProcess sends SIGTERM to c and waits up to timeout, then kills it.
func stopProcess(c *Child, timeout time.Duration) {
	c.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.Signal(syscall.SIGKILL)
		<-c.done
	}
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

// passwordEnv is the variable `coordinator serve` reads --password from.
const passwordEnv = "COORDINATOR_PASSWORD"

// securityArgs are the flags that give a child node the run's TLS files
// and etcd user; the password goes through passwordEnv.
func (e *Env) securityArgs() []string {
	if e.Embedded {
		return nil
	}
	sec := e.cfg.Security
	var args []string
	for _, f := range []struct{ flag, v string }{
		{"--cacert", sec.CACert}, {"--cert", sec.Cert}, {"--key", sec.Key}, {"--user", sec.Username},
	} {
		if f.v != "" {
			args = append(args, f.flag, f.v)
		}
	}
	if sec.InsecureSkipTLSVerify {
		args = append(args, "--insecure-skip-tls-verify")
	}
	return args
}

func (e *Env) childPassword() string {
	if e.Embedded {
		return ""
	}
	return e.cfg.Security.Password
}
