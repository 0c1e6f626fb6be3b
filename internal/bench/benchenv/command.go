package benchenv

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
)

// StartCommand starts cmd as a child process that talks with the run as a
// caller process does (see Worker): JSON values, one a line, on its stdin
// and stdout, its stderr kept for error messages. Like every child, it is
// stopped by its pid at the latest by Close and dies with the run
// (Pdeathsig). Scenarios whose processes are not `bench worker` run them
// with it.
func (e *Env) StartCommand(id string, cmd *exec.Cmd) (*Worker, error) {
	c := &Child{id: id, cmd: cmd, done: make(chan struct{}), out: &tailBuffer{max: 16 << 10}}
	cmd.Stderr = c.out
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// Through an io.Pipe read by a goroutine of its own rather than
	// StdoutPipe: Wait then returns once everything the process wrote is
	// read, so the last value it writes before it exits is never lost, and
	// the reading never stops, so the process never blocks on its stdout.
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	w := &Worker{Child: c, in: in, enc: json.NewEncoder(in), msgs: make(chan json.RawMessage, workerBacklog)}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start process %s: %w", id, err)
	}
	go w.read(pr)
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
		close(c.done)
	}()
	e.mu.Lock()
	e.children = append(e.children, c)
	e.mu.Unlock()
	return w, nil
}

// StartServe starts `coordinator serve` as a child process in the run's
// namespace, as StartChild does, but against the etcd at endpoints and
// with extra arguments after the usual ones (the run's memcached, id, the
// lease TTL). The run's etcd security settings go with it only when
// endpoints are the run's own etcd's; an etcd a scenario started itself
// has none.
func (e *Env) StartServe(id string, endpoints []string, extra ...string) (*Child, error) {
	args := []string{
		"serve", "--endpoints", strings.Join(endpoints, ","), "--namespace", e.Namespace,
		"--memcached", strings.Join(e.cfg.Memcached, ","), "--node-id", id,
		"--lease-ttl", e.cfg.LeaseTTL.String(),
	}
	own := slices.Equal(endpoints, e.Endpoints)
	if own {
		args = append(args, e.securityArgs()...)
	}
	args = append(args, extra...)
	cmd, err := e.serveCommand(args)
	if err != nil {
		return nil, err
	}
	pw := ""
	if own {
		pw = e.childPassword()
	}
	return e.startNode(id, cmd, pw)
}

// Exited is closed when the child has exited.
func (c *Child) Exited() <-chan struct{} { return c.done }
