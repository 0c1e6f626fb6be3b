package memfence

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Pipelined writes.
//
// WriteAll sends the cas and add commands of many writes to a server in one
// write and then reads their replies, in order, over a connection of its own
// (gomemcache has one command in flight per connection). memcached executes
// a connection's commands one after the other, in the order sent, and a
// reply of SERVER_ERROR leaves the connection usable: memcached swallows the
// refused item's data. Any other failure (a reply it does not expect, a
// timeout, a closed connection) closes the connection and leaves the
// outcome of the commands not answered yet unknown; those writes are then
// made one at a time, each reading its key again, so a command that did run
// is found and not harmed: every command is conditional on what was read.

// Write is one write of WriteAll: a set of Key to Value with expiration
// Exptime (memcached exptime seconds), or a delete of Key.
type Write struct {
	Key     string
	Value   []byte
	Exptime int32
	Delete  bool
}

// maxPipelineBytes bounds the item data of one pipeline; a server's
// commands beyond it go in the next one.
const maxPipelineBytes = 1 << 20

// WriteAll makes writes under term, each to a different key, starting from
// their keys' items in s (nil, or not holding a key: WriteAll reads the
// keys it lacks with one gets per server). It returns one error per write,
// as Set or Delete would have: nil, or a *ServerError of ErrFenced,
// ErrRejected, ErrContended or a transient error.
//
// The commands for one server are sent together and run in the order
// given; a write whose key changed since it was read is then made again by
// itself, after the others. So WriteAll does not order its writes: a caller
// that needs one write to land before another must make them in separate
// calls.
func (w *Writer) WriteAll(ctx context.Context, s *Snapshot, term uint32, writes []Write) []error {
	errs := make([]error, len(writes))
	if err := checkTerm(term); err != nil {
		for i := range errs {
			errs[i] = w.atServer(writes[i].Key, err)
		}
		return errs
	}
	again := make([]bool, len(writes)) // to be made one at a time
	seen := make(map[string]bool, len(writes))
	var unread []string
	for i, wr := range writes {
		switch {
		case !legalKey(wr.Key):
			errs[i] = classify(fmt.Errorf("%w: %q", memcache.ErrMalformedKey, wr.Key))
			continue
		case seen[wr.Key]:
			errs[i] = fmt.Errorf("memfence: key %q written twice in one call", wr.Key)
			continue
		}
		seen[wr.Key] = true
		if !s.holds(wr.Key) {
			unread = append(unread, wr.Key)
		}
	}
	if len(unread) > 0 {
		if s == nil {
			s = &Snapshot{items: make(map[string]*memcache.Item, len(unread)), read: make(map[string]bool, len(unread))}
		}
		if w.readInto(ctx, s, unread) != nil {
			s = nil // each write reads for itself
		}
	}
	var cmds []command
	for i, wr := range writes {
		if errs[i] != nil {
			continue
		}
		it, ok := s.take(wr.Key)
		switch {
		case !ok:
			again[i] = true
		case it != nil && TermOf(it.Flags) > term:
			errs[i] = fmt.Errorf("%w: key %q has term %d, writer has %d", ErrFenced, wr.Key, TermOf(it.Flags), term)
		case it == nil && wr.Delete:
			// Nothing to delete.
		case it == nil:
			cmds = append(cmds, command{write: i, add: true, key: wr.Key, value: wr.Value, flags: Flags(term), exptime: wr.Exptime})
		case wr.Delete:
			cmds = append(cmds, command{write: i, key: wr.Key, flags: Flags(term), exptime: -1, casID: it.CasID, delete: true})
		default:
			cmds = append(cmds, command{write: i, key: wr.Key, value: wr.Value, flags: Flags(term), exptime: wr.Exptime, casID: it.CasID})
		}
	}
	// A command is made again unless its reply settles it; one without a
	// reply (the exchange failed) has an unknown outcome.
	for _, c := range cmds {
		again[c.write] = true
	}
	for _, r := range w.sendAll(ctx, cmds) {
		c := cmds[r.cmd]
		switch {
		case r.err != nil:
			errs[c.write], again[c.write] = r.err, false
		case r.stored, c.delete && r.gone:
			again[c.write] = false
		}
	}
	for i, wr := range writes {
		if again[i] {
			errs[i] = w.writeFrom(ctx, nil, wr, term)
		}
		errs[i] = w.atServer(wr.Key, errs[i])
	}
	return errs
}

// holds reports whether s read key and has not used it yet.
func (s *Snapshot) holds(key string) bool { return s != nil && s.read[key] }

// legalKey is memcached's rule for keys, as gomemcache applies it.
func legalKey(key string) bool {
	if len(key) == 0 || len(key) > 250 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] == 0x7f {
			return false
		}
	}
	return true
}

// command is one cas (casID set) or add of a pipeline.
type command struct {
	write   int // position in WriteAll's writes
	add     bool
	delete  bool // a cas that stores an expired item
	key     string
	value   []byte
	flags   uint32
	exptime int32
	casID   uint64
}

// reply is the answer to cmds[cmd]. Neither stored, gone nor err means
// that the item changed since it was read (EXISTS, NOT_STORED): the write
// must be made again.
type reply struct {
	cmd    int
	stored bool  // STORED
	gone   bool  // NOT_FOUND to a cas: the item is gone
	err    error // memcached refused the item, or a transient failure
}

// sendAll sends cmds, one pipeline per server at a time (the servers'
// pipelines at once), and returns the replies it got.
func (w *Writer) sendAll(ctx context.Context, cmds []command) []reply {
	if len(cmds) == 0 {
		return nil
	}
	byServer := make(map[string][]int)
	addrs := make(map[string]net.Addr)
	var replies []reply
	for i, c := range cmds {
		addr, err := w.servers.PickServer(c.key)
		if err != nil {
			replies = append(replies, reply{cmd: i, err: err})
			continue
		}
		k := poolKey(addr)
		addrs[k] = addr
		byServer[k] = append(byServer[k], i)
	}
	if len(byServer) == 1 {
		for k, idx := range byServer {
			return append(replies, w.pipeline(ctx, addrs[k], cmds, idx)...)
		}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for k, idx := range byServer {
		wg.Go(func() {
			rs := w.pipeline(ctx, addrs[k], cmds, idx)
			mu.Lock()
			replies = append(replies, rs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return replies
}

// pipeline sends cmds[idx...] to addr, at most maxPipelineBytes of item
// data at a time, and returns the replies it read. It stops at the first
// exchange that fails, or when ctx ends, leaving the rest without a reply.
func (w *Writer) pipeline(ctx context.Context, addr net.Addr, cmds []command, idx []int) []reply {
	replies := make([]reply, 0, len(idx))
	for len(idx) > 0 && ctx.Err() == nil {
		n, size := 0, 0
		for n < len(idx) && (n == 0 || size+len(cmds[idx[n]].value) <= maxPipelineBytes) {
			size += len(cmds[idx[n]].value)
			n++
		}
		rs, ok := w.exchange(ctx, addr, cmds, idx[:n])
		replies = append(replies, rs...)
		if !ok {
			break
		}
		idx = idx[n:]
	}
	return replies
}

// exchange sends cmds[idx...] in one write on a connection to addr and reads
// their replies. ok is false when the exchange failed; the replies read
// until then are returned. When ctx ends, the connection's deadline is
// moved to the present, which fails the exchange at once.
func (w *Writer) exchange(ctx context.Context, addr net.Addr, cmds []command, idx []int) (replies []reply, ok bool) {
	cn, err := w.pipes.get(addr)
	if err != nil {
		return nil, false
	}
	healthy := false
	defer func() { w.pipes.release(addr, cn, healthy) }()
	if err := cn.nc.SetDeadline(time.Now().Add(w.pipes.timeout)); err != nil {
		return nil, false
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Now()) })
	defer func() {
		if !stop() {
			healthy = false // its deadline was moved: do not reuse it
		}
	}()
	var line []byte
	for _, i := range idx {
		line = cmds[i].appendLine(line[:0])
		cn.rw.Write(line)
		cn.rw.Write(cmds[i].value)
		cn.rw.Write(crlf)
	}
	if cn.rw.Flush() != nil {
		return nil, false
	}
	replies = make([]reply, 0, len(idx))
	for _, i := range idx {
		line, err := cn.rw.ReadSlice('\n')
		if err != nil {
			return replies, false
		}
		r := reply{cmd: i}
		switch {
		case bytes.Equal(line, replyStored):
			r.stored = true
		case bytes.Equal(line, replyExists), bytes.Equal(line, replyNotStored):
		case bytes.Equal(line, replyNotFound):
			r.gone = true
		case bytes.HasPrefix(line, replyServerError):
			// memcached swallowed the item's data: the connection stays
			// in step.
			r.err = classify(errors.New("memfence: memcached: " + string(bytes.TrimSpace(line))))
		default:
			// CLIENT_ERROR, ERROR or worse: memcached may have read the
			// rest of the pipeline out of step. Give up the connection;
			// this write and the rest are made again one at a time.
			return replies, false
		}
		replies = append(replies, r)
	}
	healthy = true
	return replies, true
}

// appendLine appends the command line of c to b.
func (c command) appendLine(b []byte) []byte {
	if c.add {
		b = append(b, "add "...)
	} else {
		b = append(b, "cas "...)
	}
	b = append(b, c.key...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(c.flags), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(c.exptime), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(c.value)), 10)
	if !c.add {
		b = append(b, ' ')
		b = strconv.AppendUint(b, c.casID, 10)
	}
	return append(b, crlf...)
}

var (
	crlf             = []byte("\r\n")
	replyStored      = []byte("STORED\r\n")
	replyNotStored   = []byte("NOT_STORED\r\n")
	replyExists      = []byte("EXISTS\r\n")
	replyNotFound    = []byte("NOT_FOUND\r\n")
	replyServerError = []byte("SERVER_ERROR")
)

// connPool keeps idle pipeline connections per server.
type connPool struct {
	timeout time.Duration
	maxIdle int

	mu     sync.Mutex
	idle   map[string][]*pipeConn
	closed bool
}

// pipeConn is one connection of a connPool.
type pipeConn struct {
	nc net.Conn
	rw *bufio.ReadWriter
}

func newConnPool(timeout time.Duration, maxIdle int) *connPool {
	return &connPool{timeout: timeout, maxIdle: maxIdle, idle: make(map[string][]*pipeConn)}
}

func poolKey(addr net.Addr) string { return addr.Network() + "/" + addr.String() }

// get returns an idle connection to addr, or dials one.
func (p *connPool) get(addr net.Addr) (*pipeConn, error) {
	k := poolKey(addr)
	p.mu.Lock()
	if idle := p.idle[k]; len(idle) > 0 {
		cn := idle[len(idle)-1]
		p.idle[k] = idle[:len(idle)-1]
		p.mu.Unlock()
		return cn, nil
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, addr.Network(), addr.String())
	if err != nil {
		return nil, err
	}
	return &pipeConn{nc: nc, rw: bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc))}, nil
}

// release returns a healthy connection to the pool, or closes it.
func (p *connPool) release(addr net.Addr, cn *pipeConn, healthy bool) {
	k := poolKey(addr)
	p.mu.Lock()
	if healthy && !p.closed && len(p.idle[k]) < p.maxIdle {
		p.idle[k] = append(p.idle[k], cn)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	cn.nc.Close()
}

// close closes the idle connections; connections in use are closed when
// they are released.
func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for k, idle := range p.idle {
		for _, cn := range idle {
			cn.nc.Close()
		}
		delete(p.idle, k)
	}
}
