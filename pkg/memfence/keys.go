package memfence

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// ErrNoKeyListing means a server cannot list its keys: it is older than
// memcached 1.5.19 (no "lru_crawler metadump"), or runs with its LRU
// crawler disabled.
var ErrNoKeyListing = errors.New("memfence: memcached cannot list its keys (lru_crawler metadump)")

// KeyInfo is one item a server holds, as it lists it.
type KeyInfo struct {
	// Server is the server's address.
	Server string
	// Key is the item's key.
	Key string
	// Exptime is when the item expires, in unix seconds as memcached
	// takes an absolute exptime; zero when it never does.
	Exptime int64
}

// listBusyAttempts bounds the waits for a crawler already running (another
// client's metadump).
const listBusyAttempts = 50

// Keys lists every key every server holds ("lru_crawler metadump all"),
// server by server in the selector's order. memcached lists the items its
// LRU crawler walks: items stored while it walks may be left out, expired
// ones are not listed.
func (w *Writer) Keys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	var errs []error
	_ = w.servers.Each(func(addr net.Addr) error {
		ks, err := w.serverKeys(ctx, addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("memfence: keys of %s: %w", addr, err))
			return nil
		}
		out = append(out, ks...)
		return nil
	})
	return out, errors.Join(errs...)
}

// serverKeys lists the keys of one server, waiting for a crawler already
// running.
func (w *Writer) serverKeys(ctx context.Context, addr net.Addr) ([]KeyInfo, error) {
	for range listBusyAttempts {
		ks, busy, err := w.metadump(ctx, addr)
		if !busy {
			return ks, err
		}
		select {
		case <-ctx.Done():
			return nil, ended(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil, errors.New("memfence: the LRU crawler stayed busy")
}

// metadump sends "lru_crawler metadump all" to addr and reads the listing;
// busy reports a crawler already running.
func (w *Writer) metadump(ctx context.Context, addr net.Addr) (_ []KeyInfo, busy bool, _ error) {
	if err := ended(ctx); err != nil {
		return nil, false, err
	}
	cn, err := w.pipes.get(addr)
	if err != nil {
		return nil, false, err
	}
	healthy := false
	defer func() { w.pipes.release(addr, cn, healthy) }()
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Now()) })
	defer stop()
	if err := cn.nc.SetDeadline(time.Now().Add(w.pipes.timeout)); err != nil {
		return nil, false, err
	}
	if _, err := cn.rw.WriteString("lru_crawler metadump all\r\n"); err != nil {
		return nil, false, err
	}
	if err := cn.rw.Flush(); err != nil {
		return nil, false, err
	}
	var out []KeyInfo
	for {
		// A long listing is bounded per line, not as a whole.
		if err := cn.nc.SetDeadline(time.Now().Add(w.pipes.timeout)); err != nil {
			return nil, false, err
		}
		line, err := cn.rw.ReadString('\n')
		if err != nil {
			return nil, false, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "END":
			healthy = stop()
			return out, false, nil
		case strings.HasPrefix(line, "BUSY"):
			healthy = stop()
			return nil, true, nil
		case strings.HasPrefix(line, "ERROR"), strings.HasPrefix(line, "CLIENT_ERROR"), strings.HasPrefix(line, "SERVER_ERROR"):
			healthy = stop()
			return nil, false, fmt.Errorf("%w: %s", ErrNoKeyListing, line)
		}
		ki, err := parseMetadump(line)
		if err != nil {
			return nil, false, err
		}
		ki.Server = addr.String()
		out = append(out, ki)
	}
}

// parseMetadump parses one line of a metadump: "key=<uri-encoded> exp=<unix
// seconds, or -1> la=… cas=… fetch=… cls=… size=…".
func parseMetadump(line string) (KeyInfo, error) {
	var ki KeyInfo
	for f := range strings.FieldsSeq(line) {
		name, val, _ := strings.Cut(f, "=")
		switch name {
		case "key":
			k, err := url.PathUnescape(val)
			if err != nil {
				return KeyInfo{}, fmt.Errorf("metadump line %q: %w", line, err)
			}
			ki.Key = k
		case "exp":
			exp, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return KeyInfo{}, fmt.Errorf("metadump line %q: %w", line, err)
			}
			ki.Exptime = max(exp, 0)
		}
	}
	if ki.Key == "" {
		return KeyInfo{}, fmt.Errorf("metadump line without a key: %q", line)
	}
	return ki, nil
}

// Item is an item as a Writer reads it.
type Item struct {
	// Value is the item's value.
	Value []byte
	// Term is the term of the writer that stored it (its flags).
	Term uint32
}

// Get reads key from the server the selector picks; memcache.ErrCacheMiss
// when it is absent.
func (w *Writer) Get(ctx context.Context, key string) (Item, error) {
	if err := ended(ctx); err != nil {
		return Item{}, err
	}
	it, err := w.mc.Get(key)
	if err != nil {
		if errors.Is(err, memcache.ErrCacheMiss) {
			return Item{}, err
		}
		return Item{}, classify(err)
	}
	return Item{Value: it.Value, Term: it.Flags}, nil
}

// PickServer returns the address of the server the Writer writes key to.
func (w *Writer) PickServer(key string) (string, error) {
	addr, err := w.servers.PickServer(key)
	if err != nil {
		return "", err
	}
	return addr.String(), nil
}
