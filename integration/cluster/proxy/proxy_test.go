package proxy

import (
	"bufio"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
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

// TestCutsOneDirectionOfOneClient cuts only what a named client sends: its
// own replies still flow back, another client's link is untouched, and
// Heal delivers what was held.
func TestCutsOneDirectionOfOneClient(t *testing.T) {
	names := map[string]string{} // client local address -> name
	var mu sync.Mutex
	// The client names itself once dial returns, which may be after the
	// proxy accepted: Identify waits for the name.
	p, err := Start(Config{Target: echo(t), Identify: func(c net.Conn) string {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			name, ok := names[c.RemoteAddr().String()]
			mu.Unlock()
			if ok {
				return name
			}
			runtime.Gosched()
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dialAs := func(name string) *conn {
		c := dial(t, p.Addr())
		mu.Lock()
		names[c.c.LocalAddr().String()] = name
		mu.Unlock()
		c.send("hello " + name)
		if s, err := c.recv(10 * time.Second); err != nil || s != "hello "+name {
			t.Fatalf("%s: got %q, %v", name, s, err)
		}
		return c
	}
	a, b := dialAs("a"), dialAs("b")
	p.Cut("a", Up)
	a.send("held")
	testenv.Eventually(t, 10*time.Second, func() bool { return p.Held() >= len("held\n") },
		"the proxy never held a's bytes")
	b.send("free")
	if s, err := b.recv(10 * time.Second); err != nil || s != "free" {
		t.Fatalf("b's link was cut too: got %q, %v", s, err)
	}
	if a.arrived() {
		t.Fatal("a's cut upstream delivered an echo")
	}
	p.Heal()
	if s, err := a.recv(10 * time.Second); err != nil || s != "held" {
		t.Fatalf("a after heal: got %q, %v", s, err)
	}
}

// TestCutDownstreamHoldsReplies cuts only the replies: the request reaches
// the target and its answer waits in the proxy.
func TestCutDownstreamHoldsReplies(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	p.Cut("", Down)
	c.send("ping")
	testenv.Eventually(t, 10*time.Second, func() bool { return p.Held() >= len("ping\n") },
		"the proxy never held the echo of ping")
	if c.arrived() {
		t.Fatal("a cut downstream delivered the echo")
	}
	p.Heal()
	if s, err := c.recv(10 * time.Second); err != nil || s != "ping" {
		t.Fatalf("after heal: got %q, %v", s, err)
	}
}

// TestShapeAddsLatencyAndLimitsBandwidth measures a round trip through a
// shaped link and a transfer through a limited one.
func TestShapeAddsLatencyAndLimitsBandwidth(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	p.SetShape(Both, Shape{Latency: 60 * time.Millisecond, Jitter: 10 * time.Millisecond})
	if !p.Shaped() {
		t.Fatal("not shaped")
	}
	for range 3 {
		start := time.Now()
		c.send("x")
		if _, err := c.recv(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < 100*time.Millisecond {
			t.Fatalf("round trip %s through a link with 2x60ms (±10ms) latency", rtt)
		}
	}
	p.SetShape(Both, Shape{})
	p.SetShape(Up, Shape{BytesPerSecond: 64 << 10})
	line := strings.Repeat("b", 32<<10)
	start := time.Now()
	c.send(line)
	if s, err := c.recv(10 * time.Second); err != nil || s != line {
		t.Fatalf("limited link: %d bytes, %v", len(s), err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("32 KiB went through a 64 KiB/s link in %s", d)
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := Start(Config{})
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "Target" {
		t.Fatalf("Start without a target: %v", err)
	}
}

// TestClientShareHealsAlone heals one client's cut without lifting
// another's.
func TestClientShareHealsAlone(t *testing.T) {
	p := newProxy(t)
	a, b := p.Client("a"), p.Client("b")
	a.Blackhole()
	b.Cut(Down)
	if !p.Blackholed() {
		t.Fatal("not blackholed")
	}
	a.Heal()
	p.mu.Lock()
	_, aCut := p.from["a"]
	bDir := p.from["b"]
	p.mu.Unlock()
	if aCut || bDir != Down {
		t.Fatalf("after a.Heal: a cut %v, b cut %v", aCut, bDir)
	}
	if a.Proxy() != p {
		t.Fatal("Client.Proxy is not its proxy")
	}
}
