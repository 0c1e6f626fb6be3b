// Package proxy is a small in-process TCP proxy for fault tests: it sits on
// one link (a coordinator node to its etcd member, a node to memcached) and
// can blackhole that link and heal it again, without touching the processes
// at either end.
//
// A blackholed link forwards nothing in either direction: bytes already in
// flight stay in the proxy or in the kernel's socket buffers, and new
// connections are accepted but not connected onward. Heal delivers what was
// held, as a network partition that ends before TCP gives up would; HealReset
// closes every connection, as one that outlasted TCP's patience would. Reset
// closes every connection at once, like a peer that restarted.
package proxy

import (
	"net"
	"sync"
	"time"
)

// DialTimeout bounds the proxy's connection to its target.
const DialTimeout = 2 * time.Second

// Proxy forwards connections from its listen address to a target address.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	blocked bool
	healed  chan struct{} // closed when the link is healed (or the proxy closed)
	closed  bool
	held    int // bytes read and not forwarded because the link is blackholed
	done    chan struct{}
	links   map[*link]struct{}
	wg      sync.WaitGroup
}

// link is one proxied connection pair.
type link struct {
	client net.Conn
	mu     sync.Mutex
	server net.Conn // nil until connected onward
}

func (l *link) close() {
	l.client.Close()
	l.mu.Lock()
	if l.server != nil {
		l.server.Close()
	}
	l.mu.Unlock()
}

// New listens on listen (host:port, port 0 for a free one) and forwards to
// target.
func New(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, healed: make(chan struct{}), done: make(chan struct{}), links: map[*link]struct{}{}}
	close(p.healed)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Blackholed reports whether the link is cut.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blocked
}

// Held is the number of bytes the proxy has read from either end and holds
// because the link is blackholed: they are delivered by Heal. Bytes still in
// the kernel's socket buffers are not counted.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Blackhole stops forwarding in both directions until Heal or HealReset.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.blocked {
		return
	}
	p.blocked = true
	p.healed = make(chan struct{})
}

// Heal resumes forwarding; what was held is delivered.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.blocked {
		return
	}
	p.blocked = false
	close(p.healed)
}

// HealReset closes every connection, then resumes forwarding: nothing that
// was held is delivered.
func (p *Proxy) HealReset() {
	p.Reset()
	p.Heal()
}

// Reset closes every current connection; new ones are accepted as usual.
func (p *Proxy) Reset() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	if p.blocked {
		p.blocked = false
		close(p.healed)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

// wait blocks while the link is blackholed; it returns false when the proxy
// closed.
func (p *Proxy) wait() bool {
	for {
		p.mu.Lock()
		blocked, healed, closed := p.blocked, p.healed, p.closed
		p.mu.Unlock()
		if closed {
			return false
		}
		if !blocked {
			return true
		}
		select {
		case <-healed:
		case <-p.done:
			return false
		}
	}
}

// hold waits, as wait does, before n bytes read from one end are forwarded;
// while the link is blackholed they are counted in Held.
func (p *Proxy) hold(n int) bool {
	p.mu.Lock()
	if !p.blocked {
		closed := p.closed
		p.mu.Unlock()
		return !closed
	}
	p.held += n
	p.mu.Unlock()
	ok := p.wait()
	p.mu.Lock()
	p.held -= n
	p.mu.Unlock()
	return ok
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		l := &link{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	if !p.wait() {
		return
	}
	s, err := net.DialTimeout("tcp", p.target, DialTimeout)
	if err != nil {
		return
	}
	l.mu.Lock()
	l.server = s
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(s, l.client) }()
	go func() { defer wg.Done(); p.pipe(l.client, s) }()
	wg.Wait()
}

// pipe copies src to dst, holding data while the link is blackholed. When
// either side ends, both connections are closed.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		if !p.wait() {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !p.hold(n) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
