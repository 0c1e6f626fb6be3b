// Package harness runs the real coordinator binary as separate OS processes
// for integration tests: it builds the binary once, starts `coordinator
// serve` nodes on free loopback ports, and kills (SIGKILL), pauses (SIGSTOP),
// resumes (SIGCONT) or stops (SIGTERM) them by their own pid. Everything it
// starts is stopped when the test ends, pass or fail.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// build is one binary built for the test binary.
type build struct {
	once sync.Once
	path string
	err  error
}

var (
	buildMu  sync.Mutex
	builds   = map[string]*build{}
	buildDir string
)

// Build builds the main package pkg (an import path of this module) once
// per test binary, with the race detector when race is set, and returns the
// binary's path. Call Cleanup from TestMain to remove what was built.
func Build(t testing.TB, pkg string, race bool) string {
	t.Helper()
	buildMu.Lock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "coordinator-bin-")
		if err != nil {
			buildMu.Unlock()
			t.Fatalf("build %s: %v", pkg, err)
		}
		buildDir = dir
	}
	b, ok := builds[pkg]
	if !ok {
		b = &build{}
		builds[pkg] = b
	}
	dir := buildDir
	buildMu.Unlock()
	b.once.Do(func() {
		b.path = filepath.Join(dir, filepath.Base(pkg))
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Binary builds cmd/coordinator once per test binary (with the race
// detector when the tests run with it) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return Build(t, "github.com/coordinator-dev/coordinator/cmd/coordinator", raceEnabled)
}

// Cleanup removes the binaries built; call it from TestMain after m.Run.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// FreePort returns a free loopback port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Process is a child process run by a test.
type Process struct {
	Name string
	Args []string

	t      testing.TB
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *testenv.SyncBuffer
}

// Start starts bin with args; the process is killed when the test ends. Its
// stdout and stderr are kept and printed if the test fails.
func Start(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Args: args, t: t, log: &testenv.SyncBuffer{}}
	p.start(bin)
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("---- output of %s (%s) ----\n%s", p.Name, strings.Join(p.Args, " "), p.log.String())
		}
	})
	return p
}

func (p *Process) start(bin string) {
	p.t.Helper()
	cmd := exec.Command(bin, p.Args...)
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
}

// Restart starts the process again with the same arguments after it exited.
func (p *Process) Restart() {
	p.t.Helper()
	p.mu.Lock()
	bin := p.cmd.Path
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
	default:
		p.t.Fatalf("restart %s: still running", p.Name)
	}
	p.start(bin)
}

// Pid is the process id.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL (after SIGCONT, in case it was paused) and waits.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	p.Signal(syscall.SIGCONT)
	<-p.Exited()
}

// Pause sends SIGSTOP.
func (p *Process) Pause() { p.Signal(syscall.SIGSTOP) }

// Resume sends SIGCONT.
func (p *Process) Resume() { p.Signal(syscall.SIGCONT) }

// Stop sends SIGTERM and waits up to timeout for a clean exit; it fails the
// test if the process does not exit in time.
func (p *Process) Stop(timeout time.Duration) {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
	case <-time.After(timeout):
		p.t.Errorf("%s did not exit within %s of SIGTERM", p.Name, timeout)
		p.Kill()
	}
}

// ExitCode is the exit status after the process exited, -1 if it was killed
// by a signal.
func (p *Process) ExitCode() int {
	<-p.Exited()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.ProcessState.ExitCode()
}

// Output returns everything the process printed so far.
func (p *Process) Output() string { return p.log.String() }

// WaitOutput waits until the process has printed a line containing substr.
func (p *Process) WaitOutput(ctx context.Context, substr string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.log.String(), substr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never printed %q: %w", p.Name, substr, ctx.Err())
		case <-p.Exited():
			if strings.Contains(p.log.String(), substr) {
				return nil
			}
			return fmt.Errorf("%s exited before printing %q", p.Name, substr)
		case <-tick.C:
		}
	}
}

// Node is a `coordinator serve` process.
type Node struct {
	*Process
	ID string
}

// NodeOptions configure StartNode.
type NodeOptions struct {
	// ID is --node-id.
	ID string
	// Endpoints is --endpoints; empty starts the node's own embedded etcd
	// on a free port in a temporary data dir (EmbedAddr tells where).
	Endpoints []string
	// Memcached is --memcached.
	Memcached string
	// Namespace is --namespace; empty means the default.
	Namespace string
	// LeaseTTL is --lease-ttl; zero means 2s.
	LeaseTTL time.Duration
	// Extra arguments.
	Extra []string
}

// StartNode starts `coordinator serve` and waits until it logs that it is
// running.
func StartNode(t testing.TB, o NodeOptions) *Node {
	t.Helper()
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 2 * time.Second
	}
	args := []string{"serve", "--node-id", o.ID, "--memcached", o.Memcached, "--lease-ttl", o.LeaseTTL.String(), "--log-level", "debug"}
	if len(o.Endpoints) > 0 {
		args = append(args, "--endpoints", strings.Join(o.Endpoints, ","))
	} else {
		args = append(args, "--data-dir", t.TempDir(), "--embed-listen", "127.0.0.1:"+strconv.Itoa(FreePort(t)))
	}
	if o.Namespace != "" {
		args = append(args, "--namespace", o.Namespace)
	}
	args = append(args, o.Extra...)
	n := &Node{Process: Start(t, o.ID, Binary(t), args...), ID: o.ID}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.WaitOutput(ctx, "node starting"); err != nil {
		t.Fatal(err)
	}
	return n
}

// EmbedEndpoint returns the endpoint of a node's own embedded etcd.
func (n *Node) EmbedEndpoint() string {
	for i, a := range n.Args {
		if a == "--embed-listen" && i+1 < len(n.Args) {
			return "http://" + n.Args[i+1]
		}
	}
	return ""
}

// Run runs the binary to completion with stdin and returns stdout, stderr
// and the exit code.
func Run(t testing.TB, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run coordinator %v: %v", args, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// Lines returns the lines of s.
func Lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
