package proxy

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// echo runs a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write([]byte(sc.Text() + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

type conn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &conn{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *conn) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s + "\n")); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// recv reads a line within d; ok is false on timeout or error.
func (c *conn) recv(d time.Duration) (string, error) {
	c.c.SetReadDeadline(time.Now().Add(d))
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// arrived reports, without waiting, whether anything has arrived for c to
// read: bytes buffered by its reader or in the socket's receive buffer (a
// peek that does not block and consumes nothing).
func (c *conn) arrived() bool {
	c.t.Helper()
	if c.r.Buffered() > 0 {
		return true
	}
	// A past read deadline would fail the peek before it looks at the socket.
	if err := c.c.SetReadDeadline(time.Time{}); err != nil {
		c.t.Fatalf("clear read deadline: %v", err)
	}
	raw, err := c.c.(*net.TCPConn).SyscallConn()
	if err != nil {
		c.t.Fatalf("raw conn: %v", err)
	}
	var n int
	var perr error
	buf := make([]byte, 1)
	if err := raw.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		c.t.Fatalf("peek: %v", err)
	}
	if errors.Is(perr, syscall.EAGAIN) {
		return false
	}
	if perr != nil {
		c.t.Fatalf("peek: %v", perr)
	}
	return n > 0
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestForwardsBlackholesAndHeals(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	c.send("one")
	if s, err := c.recv(10 * time.Second); err != nil || s != "one" {
		t.Fatalf("got %q, %v", s, err)
	}
	p.Blackhole()
	if !p.Blackholed() {
		t.Fatal("not blackholed")
	}
	c.send("two")
	// Once the proxy holds "two\n" the echo server cannot have it: nothing
	// may have come back.
	testenv.Eventually(t, 10*time.Second, func() bool { return p.Held() >= len("two\n") },
		"the blackholed proxy never held the %d bytes of %q", len("two\n"), "two\n")
	if c.arrived() {
		s, err := c.recv(10 * time.Second)
		t.Fatalf("blackholed link delivered %q (%v)", s, err)
	}
	// A new connection is held too.
	c2 := dial(t, p.Addr())
	c2.send("three")
	p.Heal()
	if s, err := c.recv(10 * time.Second); err != nil || s != "two" {
		t.Fatalf("held data after heal: got %q, %v", s, err)
	}
	if h := p.Held(); h != 0 {
		t.Fatalf("the healed proxy still holds %d bytes", h)
	}
	if s, err := c2.recv(10 * time.Second); err != nil || s != "three" {
		t.Fatalf("held connection after heal: got %q, %v", s, err)
	}
}

func TestHealResetDropsHeldData(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	c.send("one")
	if _, err := c.recv(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	c.send("lost")
	p.HealReset()
	if s, err := c.recv(10 * time.Second); err == nil {
		t.Fatalf("reset connection delivered %q", s)
	}
	c2 := dial(t, p.Addr())
	c2.send("after")
	if s, err := c2.recv(10 * time.Second); err != nil || s != "after" {
		t.Fatalf("new connection after reset: got %q, %v", s, err)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	c.send("one")
	if _, err := c.recv(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a blackholed link")
	}
	if _, err := c.recv(10 * time.Second); err == nil {
		t.Fatal("connection still open after Close")
	}
}
