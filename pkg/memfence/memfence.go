// Package memfence writes to memcached under a leadership term so that a
// former leader cannot overwrite a value written under a later term (G5).
//
// Every item the coordinator writes carries the writer's term in the high 16
// bits of memcached's 32-bit item flags, the low 16 bits 0, which stock
// clients read as a plain value (see Flags and TermOf). A set reads the
// item with gets; if the stored term is
// newer than the writer's, the write is refused with ErrFenced, otherwise it
// is written with cas (or add when the key is absent), so a concurrent write
// by anyone in between makes the attempt start over. A delete is a cas that
// stores an empty, already-expired item, so it too is conditional on what it
// read: memcached treats a negative expiration as "expired at once".
//
// The remaining window: an absent key (never written, or deleted) carries no
// term, so a former leader that validated its lease, then paused before its
// add, can recreate it after a newer leader deleted it. The applier bounds
// this by checking its lease before every step of writes (see WriteAll);
// see the README.
package memfence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// Errors returned by Writer.
var (
	// ErrFenced means the item was written under a newer term: the writer is
	// not the leader and must stop.
	ErrFenced = errors.New("memfence: item holds a newer term")
	// ErrRejected means memcached refused the item for good (too large for
	// its item size, say); retrying cannot help.
	ErrRejected = errors.New("memfence: memcached refused the item")
	// ErrContended means the key changed under every attempt.
	ErrContended = errors.New("memfence: key kept changing during the write")
)

// maxAttempts bounds the read-compare-write loop under contention.
const maxAttempts = 64

// Defaults of Config.
const (
	// DefaultTimeout bounds each network exchange with memcached.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultMaxIdleConns is the number of idle connections kept per server.
	DefaultMaxIdleConns = 2
)

// Config configures a Writer. Zero values mean the defaults noted.
type Config struct {
	// Servers are the memcached servers (host:port, or the path of a unix
	// socket); each key goes to one of them, picked as memcache.ServerList
	// does. Either Servers or Selector is required, not both.
	Servers []string
	// Selector picks each key's server (a *hashring.Ring, say); every read
	// and write of a key goes to the server it picks. It must be safe for
	// concurrent use. When it is a ServerNamer, servers are named by the
	// addresses it gives them.
	Selector memcache.ServerSelector
	// Timeout bounds each network exchange (a command and its reply, or one
	// pipeline); zero means DefaultTimeout.
	Timeout time.Duration
	// MaxIdleConns is the number of idle connections kept per server;
	// zero means DefaultMaxIdleConns.
	MaxIdleConns int
	// Stats, when set, counts what the Writer notices of its servers
	// (restarts, see CheckRestarts), by server.
	Stats *Stats
}

// Validate checks the config; its errors are *config.FieldError. A server
// address that does not resolve is reported by New.
func (c *Config) Validate() error {
	switch {
	case len(c.Servers) == 0 && c.Selector == nil:
		return config.Errorf("memfence", "Servers", "none given: %w", memcache.ErrNoServers)
	case len(c.Servers) > 0 && c.Selector != nil:
		return config.Errorf("memfence", "Servers", "%q given with a Selector: give one of them", c.Servers)
	case slices.Contains(c.Servers, ""):
		return config.Errorf("memfence", "Servers", "%q holds an empty address", c.Servers)
	case c.Timeout < 0:
		return config.Errorf("memfence", "Timeout", "%s is negative", c.Timeout)
	case c.MaxIdleConns < 0:
		return config.Errorf("memfence", "MaxIdleConns", "%d is negative", c.MaxIdleConns)
	}
	return nil
}

// withDefaults fills in the defaults of unset fields.
func (c Config) withDefaults() Config {
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxIdleConns = cmp.Or(c.MaxIdleConns, DefaultMaxIdleConns)
	return c
}

// Writer writes fenced items. It is safe for concurrent use.
type Writer struct {
	mc      *memcache.Client
	servers memcache.ServerSelector
	names   ServerNamer // nil: servers are named by their address
	pipes   *connPool
	stats   *Stats
	watch   restartWatch
}

// New returns a Writer over cfg.Servers or cfg.Selector. It returns a
// *config.FieldError for an invalid cfg, or a server address that does not
// resolve.
func New(cfg Config) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ss := cfg.Selector
	names, _ := ss.(ServerNamer)
	if ss == nil {
		sl := new(memcache.ServerList)
		if err := sl.SetServers(cfg.Servers...); err != nil {
			return nil, config.Errorf("memfence", "Servers", "%q: %w", cfg.Servers, err)
		}
		// Each lists the resolved addresses in the order given.
		ln, i := make(listNames, len(cfg.Servers)), 0
		_ = sl.Each(func(a net.Addr) error { ln[a.String()] = cfg.Servers[i]; i++; return nil })
		ss, names = sl, ln
	}
	mc := memcache.NewFromSelector(ss)
	mc.Timeout, mc.MaxIdleConns = cfg.Timeout, cfg.MaxIdleConns
	return &Writer{mc: mc, servers: ss, names: names, pipes: newConnPool(cfg.Timeout, cfg.MaxIdleConns), stats: cfg.Stats}, nil
}

// Close closes the Writer's idle connections.
func (w *Writer) Close() error {
	w.pipes.close()
	return w.mc.Close()
}

// Set stores value under key with the given expiration (memcached exptime
// seconds), stamped with term. Its error is a *ServerError.
//
// Every method that talks to memcached stops at its next exchange once ctx
// ends, with an error wrapping ctx's; an exchange under way is bounded by
// Config.Timeout (a pipeline of WriteAll is cut short at once).
func (w *Writer) Set(ctx context.Context, key string, value []byte, exptime int32, term uint32) error {
	return w.atServer(key, w.setFrom(ctx, nil, Write{Key: key, Value: value, Exptime: exptime}, term))
}

// Delete removes key if the term stored with it is not newer than term.
// Its error is a *ServerError.
func (w *Writer) Delete(ctx context.Context, key string, term uint32) error {
	return w.atServer(key, w.deleteFrom(ctx, nil, key, term))
}

// ended returns ctx's error, wrapped, once ctx has ended.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memfence: %w", err)
	}
	return nil
}

// Snapshot holds keys read together with one multi-key gets, so that writes
// to many keys share one read rather than needing one each. A write that
// starts from a snapshot uses its key's item for its first attempt only; the
// item's cas id still makes the write conditional on nothing having changed
// since the read, and any later attempt reads the key again. A snapshot is
// for one writer goroutine; each of its keys serves one write.
type Snapshot struct {
	items map[string]*memcache.Item // found keys; nil entries are consumed
	read  map[string]bool           // every key read, found or not
}

// readChunkKeys bounds the keys of one gets command.
const readChunkKeys = 64

// Read reads keys with one gets command per memcached server for every
// readChunkKeys of its keys, the servers at once. Its error is a
// *ServerError, or one per server that failed, joined (see ServerErrors).
func (w *Writer) Read(ctx context.Context, keys []string) (*Snapshot, error) {
	s := &Snapshot{items: make(map[string]*memcache.Item, len(keys)), read: make(map[string]bool, len(keys))}
	if err := w.readInto(ctx, s, keys); err != nil {
		return nil, err
	}
	return s, nil
}

// readInto reads keys into s (see Read).
func (w *Writer) readInto(ctx context.Context, s *Snapshot, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	first, err := w.servers.PickServer(keys[0])
	if err != nil {
		return w.atServer(keys[0], classify(err))
	}
	one := true
	for _, k := range keys[1:] {
		if a, err := w.servers.PickServer(k); err != nil || a != first {
			one = false
			break
		}
	}
	if one {
		// The common case, one server: no grouping.
		return w.readServer(ctx, s, nil, first, keys)
	}
	var addrs []net.Addr
	var groups [][]string
	for _, k := range keys {
		a, err := w.servers.PickServer(k)
		if err != nil {
			return w.atServer(k, classify(err))
		}
		i := slices.Index(addrs, a)
		if i < 0 {
			i, addrs, groups = len(addrs), append(addrs, a), append(groups, nil)
		}
		groups[i] = append(groups[i], k)
	}
	var mu sync.Mutex
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() { errs[i] = w.readServer(ctx, s, &mu, a, groups[i]) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// readServer reads keys, all at the server addr, into s, under mu unless
// it is nil. Its error is a *ServerError.
func (w *Writer) readServer(ctx context.Context, s *Snapshot, mu *sync.Mutex, addr net.Addr, keys []string) error {
	for chunk := range slices.Chunk(keys, readChunkKeys) {
		err := ended(ctx)
		var items map[string]*memcache.Item
		if err == nil {
			items, err = w.mc.GetMulti(chunk)
		}
		if err != nil {
			return &ServerError{Server: w.serverName(addr), Err: classify(err)}
		}
		if mu != nil {
			mu.Lock()
		}
		maps.Copy(s.items, items)
		for _, k := range chunk {
			s.read[k] = true
		}
		if mu != nil {
			mu.Unlock()
		}
	}
	return nil
}

// take returns key's item as read (nil when it was absent) and whether the
// snapshot held it, and forgets it.
func (s *Snapshot) take(key string) (*memcache.Item, bool) {
	if s == nil || !s.read[key] {
		return nil, false
	}
	delete(s.read, key)
	it := s.items[key]
	delete(s.items, key)
	return it, true
}

// get reads key: from the snapshot the first time when it holds the key,
// from memcached otherwise. An absent key is memcache.ErrCacheMiss.
func (w *Writer) get(s *Snapshot, key string) (*memcache.Item, error) {
	if it, ok := s.take(key); ok {
		if it == nil {
			return nil, memcache.ErrCacheMiss
		}
		return it, nil
	}
	return w.mc.Get(key)
}

// WriteFrom makes wr (a Set, or a Delete when wr.Delete) under term,
// starting from its key's item in s (which may be nil). Its error is a
// *ServerError.
func (w *Writer) WriteFrom(ctx context.Context, s *Snapshot, wr Write, term uint32) error {
	return w.atServer(wr.Key, w.writeFrom(ctx, s, wr, term))
}

// writeFrom is WriteFrom, its error not naming the server.
func (w *Writer) writeFrom(ctx context.Context, s *Snapshot, wr Write, term uint32) error {
	if wr.Delete {
		return w.deleteFrom(ctx, s, wr.Key, term)
	}
	return w.setFrom(ctx, s, wr, term)
}

// setFrom is Set of wr starting from its key's item in s (which may be nil).
func (w *Writer) setFrom(ctx context.Context, s *Snapshot, wr Write, term uint32) error {
	key, value, exptime := wr.Key, wr.Value, wr.Exptime
	if err := checkTerm(term); err != nil {
		return err
	}
	for range maxAttempts {
		if err := ended(ctx); err != nil {
			return err
		}
		it, err := w.get(s, key)
		switch {
		case errors.Is(err, memcache.ErrCacheMiss):
			err = w.mc.Add(&memcache.Item{Key: key, Value: value, Flags: Flags(term), Expiration: exptime})
			if errors.Is(err, memcache.ErrNotStored) {
				continue // someone added it first: read it again
			}
			return classify(err)
		case err != nil:
			return classify(err)
		}
		if held := TermOf(it.Flags); held > term {
			return fmt.Errorf("%w: key %q has term %d, writer has %d", ErrFenced, key, held, term)
		}
		it.Value, it.Flags, it.Expiration = value, Flags(term), exptime
		err = w.mc.CompareAndSwap(it)
		if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrCacheMiss) {
			continue
		}
		return classify(err)
	}
	return fmt.Errorf("%w: %q", ErrContended, key)
}

// deleteFrom is Delete starting from key's item in s (which may be nil).
func (w *Writer) deleteFrom(ctx context.Context, s *Snapshot, key string, term uint32) error {
	if err := checkTerm(term); err != nil {
		return err
	}
	for range maxAttempts {
		if err := ended(ctx); err != nil {
			return err
		}
		it, err := w.get(s, key)
		switch {
		case errors.Is(err, memcache.ErrCacheMiss):
			return nil
		case err != nil:
			return classify(err)
		}
		if held := TermOf(it.Flags); held > term {
			return fmt.Errorf("%w: key %q has term %d, writer has %d", ErrFenced, key, held, term)
		}
		it.Value, it.Flags, it.Expiration = nil, Flags(term), -1
		err = w.mc.CompareAndSwap(it)
		if errors.Is(err, memcache.ErrCASConflict) {
			continue
		}
		if errors.Is(err, memcache.ErrCacheMiss) {
			return nil
		}
		return classify(err)
	}
	return fmt.Errorf("%w: %q", ErrContended, key)
}

// classify marks memcached's permanent refusals as ErrRejected, wrapping
// the cause too; every other error (connection refused, timeout) is
// transient and returned as it is. gomemcache reports memcached's
// "SERVER_ERROR object too large" and "CLIENT_ERROR ..." replies to a set or
// cas as an untyped error quoting the reply line (its ErrServerError is not
// used for them), so the reply's text is the only signal there is.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, memcache.ErrMalformedKey) {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "SERVER_ERROR object too large") || strings.Contains(msg, "CLIENT_ERROR") {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return err
}
