// Package testenv starts the real parts tests run against: an embedded etcd
// member in a temporary directory and memcached processes on free loopback
// ports, each stopped by its own pid when the test ends, pass or fail. Main,
// every such test binary's TestMain, fails a binary whose passing tests
// leave goroutines running.
package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/pkg/embedded"
)

// Etcd starts an embedded etcd member and returns it with a client; both are
// closed when the test ends.
func Etcd(t testing.TB) (*embedded.Server, *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx, embedded.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", LogLevel: "panic"})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv, Client(t, srv.Endpoints())
}

// Client dials etcd; the client is closed when the test ends.
func Client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Memcached is a memcached process owned by a test.
type Memcached struct {
	// Addr is host:port; it stays the same across Stop and Start.
	Addr string
	// Args are extra memcached arguments.
	Args []string

	t   testing.TB
	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartMemcached starts memcached on a free loopback port; it is killed when
// the test ends. Extra arguments (for example "-I", "2m") are passed on.
func StartMemcached(t testing.TB, args ...string) *Memcached {
	t.Helper()
	if _, err := exec.LookPath("memcached"); err != nil {
		t.Fatalf("memcached is not installed (scripts/install-deps.sh installs it): %v", err)
	}
	var lastErr error
	for range 10 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		m := &Memcached{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Args: args, t: t}
		if lastErr = m.start(); lastErr == nil {
			t.Cleanup(m.kill)
			return m
		}
	}
	t.Fatalf("start memcached: %v", lastErr)
	return nil
}

// Start starts the process again on the same address after Stop.
func (m *Memcached) Start() {
	m.t.Helper()
	var err error
	for range 50 { // the port may linger briefly after the kill
		if err = m.start(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("restart memcached on %s: %v", m.Addr, err)
}

// Stop kills the process (SIGKILL) and waits for it; the data is gone.
func (m *Memcached) Stop() { m.kill() }

// Pid returns the process id, zero when stopped.
func (m *Memcached) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

func (m *Memcached) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return errors.New("already running")
	}
	host, port, _ := net.SplitHostPort(m.Addr)
	args := append([]string{"-l", host, "-p", port, "-U", "0", "-m", "64", "-t", "2"}, m.Args...)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	cmd := exec.Command("memcached", args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var last string
		for sc.Scan() {
			last = sc.Text()
		}
		exited <- last
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", m.Addr, 200*time.Millisecond)
		if err == nil {
			ours, err := servedBy(c, cmd.Process.Pid)
			c.Close()
			if err == nil && ours {
				m.cmd = cmd
				return nil
			}
			// Another process took the port first: this one cannot listen.
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("%s is served by another process (stats: %v)", m.Addr, err)
		}
		select {
		case msg := <-exited:
			_ = cmd.Wait()
			return fmt.Errorf("memcached exited: %s", msg)
		case <-time.After(10 * time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return fmt.Errorf("memcached did not listen on %s", m.Addr)
}

// servedBy reports whether the memcached answering on c is process pid, by
// its "stats" reply.
func servedBy(c net.Conn, pid int) (bool, error) {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return false, err
	}
	if _, err := io.WriteString(c, "stats\r\n"); err != nil {
		return false, err
	}
	want := "STAT pid " + strconv.Itoa(pid)
	found := false
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		switch sc.Text() {
		case want:
			found = true
		case "END":
			return found, nil
		}
	}
	return false, fmt.Errorf("no end of stats: %v", sc.Err())
}

func (m *Memcached) kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
	m.cmd = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Eventually polls cond every few milliseconds until it returns true or the
// deadline passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
