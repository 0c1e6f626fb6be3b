// Package proxy is a small in-process TCP proxy for fault tests: it sits on
// one link (a coordinator node to its etcd member, a node to memcached, an
// etcd member's inbound peer port) and can blackhole that link, slow it
// down, and heal it again, without touching the processes at either end.
//
// A blackholed link forwards nothing: bytes already in flight stay in the
// proxy or in the kernel's socket buffers, and new connections are accepted
// but not connected onward. Heal delivers what was held, as a network
// partition that ends before TCP gives up would; HealReset closes every
// connection, as one that outlasted TCP's patience would. Reset closes every
// connection at once, like a peer that restarted.
//
// A cut can be limited to one direction (Up: from the dialling client to the
// target, Down: back) and to the connections of one client, named by
// Config.Identify: that is how a test cuts one etcd member off from another
// in one direction only while every other link through the same port
// stays up. A Shape adds latency with jitter and a bandwidth limit to a
// direction; bytes are delayed, never dropped, as on a TCP link that
// retransmits what it lost.
package proxy

import (
	"math/rand"
	"net"
	"sync"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// DialTimeout bounds the proxy's connection to its target.
const DialTimeout = 2 * time.Second

// Direction is a direction of the traffic through the proxy.
type Direction uint8

// Directions.
const (
	// Up is the traffic from the client that dialled the proxy to the target.
	Up Direction = 1 << iota
	// Down is the traffic from the target back to the client.
	Down
	// Both is Up and Down.
	Both = Up | Down
)

// Shape slows one direction of a link down.
type Shape struct {
	// Latency is added to every chunk of bytes; zero adds none.
	Latency time.Duration
	// Jitter varies Latency uniformly by up to Jitter either way (never
	// below zero). Bytes stay in order: a chunk is never delivered before
	// the one read before it.
	Jitter time.Duration
	// BytesPerSecond limits the direction's throughput over every
	// connection of the proxy together; zero means no limit.
	BytesPerSecond int64
}

// Config configures Start.
type Config struct {
	// Listen is the address to listen on; default "127.0.0.1:0" (a free
	// port).
	Listen string
	// Target is the address the proxy forwards to (required).
	Target string
	// Identify, when set, names the client of every new connection before
	// it is forwarded (which process dialled it, say), for Cut. An empty
	// name is a client no Cut by name applies to.
	Identify func(c net.Conn) string
	// Seed seeds the jitter; zero seeds it from the clock.
	Seed int64
}

// Validate reports a Config that cannot work.
func (c Config) Validate() error {
	if c.Target == "" {
		return config.Errorf("proxy", "Target", "is required")
	}
	return nil
}

// Proxy forwards connections from its listen address to a target address.
type Proxy struct {
	cfg Config
	ln  net.Listener

	mu      sync.Mutex
	all     Direction            // directions cut for every client
	from    map[string]Direction // directions cut for one client
	changed chan struct{}        // closed and replaced when a cut is healed
	shapes  [2]Shape             // by dirIndex
	bwNext  [2]time.Time         // when each direction's bandwidth is free again
	rng     *rand.Rand
	closed  bool
	held    int // bytes read and not forwarded because their direction is cut
	done    chan struct{}
	links   map[*link]struct{}
	wg      sync.WaitGroup
}

// link is one proxied connection pair.
type link struct {
	client net.Conn
	mu     sync.Mutex
	from   string   // the client's name from Config.Identify, "" until known
	server net.Conn // nil until connected onward
	asked  bool     // Identify was called once; guarded by the proxy's mu
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
	return Start(Config{Listen: listen, Target: target})
}

// Start starts a proxy as cfg says.
func Start(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg: cfg, ln: ln, from: map[string]Direction{}, changed: make(chan struct{}),
		rng: rand.New(rand.NewSource(cfg.Seed)), done: make(chan struct{}), links: map[*link]struct{}{},
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.cfg.Target }

// Blackholed reports whether any direction is cut, for every client or for
// one.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all != 0 || len(p.from) > 0
}

// Held is the number of bytes the proxy has read from either end and holds
// because their direction is cut: they are delivered by Heal. Bytes still
// in the kernel's socket buffers are not counted.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Blackhole stops forwarding in both directions, for every client, until
// Heal or HealReset.
func (p *Proxy) Blackhole() { p.Cut("", Both) }

// Cut stops forwarding in dir for the connections of client from (as
// Config.Identify names them), or of every client when from is empty,
// until Heal or HealReset. Cuts add up.
func (p *Proxy) Cut(from string, dir Direction) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if from == "" {
		p.all |= dir
	} else {
		p.from[from] |= dir
	}
}

// Heal lifts every cut; what was held is delivered.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.all == 0 && len(p.from) == 0 {
		return
	}
	p.all = 0
	p.from = map[string]Direction{}
	p.wake()
}

// HealClient lifts the cuts of client from, leaving the others.
func (p *Proxy) HealClient(from string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.from[from]; !ok {
		return
	}
	delete(p.from, from)
	p.wake()
}

// Client is the share of a proxy's traffic that one client (as
// Config.Identify names it) sends and receives: its own link on a proxy
// that several clients share.
type Client struct {
	p    *Proxy
	name string
}

// Client returns client name's share of the proxy.
func (p *Proxy) Client(name string) Client { return Client{p: p, name: name} }

// Blackhole cuts the client's traffic both ways until Heal.
func (c Client) Blackhole() { c.p.Cut(c.name, Both) }

// Cut cuts the client's traffic in dir until Heal.
func (c Client) Cut(dir Direction) { c.p.Cut(c.name, dir) }

// Heal lifts the client's cuts; what was held is delivered.
func (c Client) Heal() { c.p.HealClient(c.name) }

// Proxy is the proxy the client's share is of.
func (c Client) Proxy() *Proxy { return c.p }

// wake tells every waiter that a cut was lifted; p.mu is held.
func (p *Proxy) wake() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// HealReset closes every connection, then lifts every cut: nothing that
// was held is delivered.
func (p *Proxy) HealReset() {
	p.Reset()
	p.Heal()
}

// SetShape slows the directions in dir down as s says; the zero Shape
// restores a plain link. It applies to bytes read from then on.
func (p *Proxy) SetShape(dir Direction, s Shape) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range []Direction{Up, Down} {
		if dir&d != 0 {
			p.shapes[dirIndex(d)] = s
		}
	}
}

// Shaped reports whether a direction has a Shape.
func (p *Proxy) Shaped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shapes[0] != Shape{} || p.shapes[1] != Shape{}
}

func dirIndex(d Direction) int {
	if d == Up {
		return 0
	}
	return 1
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
	p.all = 0
	p.from = map[string]Direction{}
	p.wake()
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

// name returns the name of l's client. A client Identify could not name
// yet (its process had just started, say) is asked again while some cut
// names a client, so a cut applies to every connection of its client.
func (p *Proxy) name(l *link) string {
	l.mu.Lock()
	from := l.from
	l.mu.Unlock()
	if from != "" || p.cfg.Identify == nil {
		return from
	}
	p.mu.Lock()
	named := len(p.from) > 0
	asked := l.asked
	p.mu.Unlock()
	if asked && !named {
		return ""
	}
	from = p.cfg.Identify(l.client)
	l.mu.Lock()
	l.from = from
	l.mu.Unlock()
	p.mu.Lock()
	l.asked = true
	p.mu.Unlock()
	return from
}

// cut reports whether dir is cut for client from; p.mu is held.
func (p *Proxy) cut(from string, dir Direction) bool {
	return p.all&dir != 0 || (from != "" && p.from[from]&dir != 0)
}

// wait blocks while dir is cut for client from, counting n bytes as held
// meanwhile; it returns false when the proxy closed.
func (p *Proxy) wait(from string, dir Direction, n int) bool {
	p.mu.Lock()
	counted := false
	for !p.closed && p.cut(from, dir) {
		if !counted {
			p.held += n
			counted = true
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.done:
		}
		p.mu.Lock()
	}
	if counted {
		p.held -= n
	}
	closed := p.closed
	p.mu.Unlock()
	return !closed
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
	if !p.wait(p.name(l), Up, 0) {
		return
	}
	s, err := net.DialTimeout("tcp", p.cfg.Target, DialTimeout)
	if err != nil {
		return
	}
	l.mu.Lock()
	l.server = s
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, s, l.client, Up) }()
	go func() { defer wg.Done(); p.pipe(l, l.client, s, Down) }()
	wg.Wait()
}

// chunk is bytes read from one end, due at the other end at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst in direction dir: a reader queues what it reads
// with the time it is due (its Shape's latency), a writer delivers it then,
// holding it while dir is cut and pacing it to the bandwidth limit. When
// either side ends, both connections are closed.
func (p *Proxy) pipe(l *link, dst, src net.Conn, dir Direction) {
	q := make(chan chunk, 64)
	dead := make(chan struct{})
	go func() {
		defer close(q)
		buf := make([]byte, 32<<10)
		var last time.Time
		for {
			n, err := src.Read(buf)
			if n > 0 {
				c := chunk{b: append([]byte(nil), buf[:n]...), due: p.due(dir, &last)}
				select {
				case q <- c:
				case <-dead:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(dead)
		dst.Close()
		src.Close()
		for range q {
		}
	}()
	for c := range q {
		if d := time.Until(c.due); d > 0 && !p.sleep(d) {
			return
		}
		if !p.wait(p.name(l), dir, len(c.b)) {
			return
		}
		if d := p.pace(dir, len(c.b)); d > 0 && !p.sleep(d) {
			return
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}

// due is when bytes read at the call in dir are to be delivered: then plus the
// direction's latency and jitter, and never before the previous chunk of
// the same pipe (*last).
func (p *Proxy) due(dir Direction, last *time.Time) time.Time {
	now := time.Now()
	p.mu.Lock()
	s := p.shapes[dirIndex(dir)]
	d := s.Latency
	if s.Jitter > 0 {
		d += time.Duration(p.rng.Int63n(int64(2*s.Jitter))) - s.Jitter
	}
	p.mu.Unlock()
	due := now.Add(max(d, 0))
	if due.Before(*last) {
		due = *last
	}
	*last = due
	return due
}

// pace reserves the direction's bandwidth for n bytes and returns how long
// to wait before sending them.
func (p *Proxy) pace(dir Direction, n int) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := dirIndex(dir)
	bps := p.shapes[i].BytesPerSecond
	if bps <= 0 {
		return 0
	}
	now := time.Now()
	start := p.bwNext[i]
	if start.Before(now) {
		start = now
	}
	p.bwNext[i] = start.Add(time.Duration(int64(n) * int64(time.Second) / bps))
	return start.Sub(now)
}

// sleep waits d or until the proxy closes; it reports whether d elapsed.
func (p *Proxy) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}
