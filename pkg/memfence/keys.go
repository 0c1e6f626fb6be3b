package memfence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
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

// crawlerBusyWait bounds the wait for a crawler already running (another
// client's metadump, or the reclaim a listing starts).
const crawlerBusyWait = 30 * time.Second

// Keys lists every key every server holds, once, server by server in the
// selector's order. memcached lists the items its LRU crawler walks
// ("lru_crawler metadump hash", which walks the hash table, or "metadump
// all", which walks the LRU queues, on a memcached without the first):
// expired items are not listed, and a walk may leave out items stored or
// moved while it walks. ListAgreed checks a listing against the server's
// count of its items.
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

// Listing is one server's keys, listed until a listing held as many keys
// as the server counts items.
type Listing struct {
	// Server is the server's address.
	Server string
	// Keys are the keys of every listing made, each once.
	Keys []KeyInfo
	// Items is the server's count of its items (curr_items) at the last
	// listing.
	Items uint64
	// Listed is how many keys the last listing held.
	Listed int
	// Agreed reports that a listing held as many keys as the server
	// counted items.
	Agreed bool
	// Listings counts the listings made.
	Listings int
}

// ListAgreed lists the keys of every server, in the selector's order. Each
// server is listed until a listing holds as many keys as the server counts
// items right after it, or attempts listings were made (Agreed tells
// which); before each listing the server's LRU crawler reclaims its expired
// items ("lru_crawler crawl all"), which the count holds and a listing
// does not. Keys is the union of the server's listings. Meant for a pool
// nobody writes to meanwhile: an item stored or removed between a listing
// and the count makes them disagree. A server that does not answer is
// reported in the error, the others are still listed.
func (w *Writer) ListAgreed(ctx context.Context, attempts int) ([]Listing, error) {
	var out []Listing
	var errs []error
	_ = w.servers.Each(func(addr net.Addr) error {
		l, err := w.listAgreed(ctx, addr, max(attempts, 1))
		if err != nil {
			errs = append(errs, fmt.Errorf("memfence: keys of %s: %w", addr, err))
			return nil
		}
		out = append(out, l)
		return nil
	})
	return out, errors.Join(errs...)
}

// listAgreed is ListAgreed of one server.
func (w *Writer) listAgreed(ctx context.Context, addr net.Addr, attempts int) (Listing, error) {
	l := Listing{Server: addr.String()}
	seen := make(map[string]bool)
	for range attempts {
		if err := w.reclaim(ctx, addr); err != nil {
			return l, err
		}
		ks, err := w.serverKeys(ctx, addr)
		if err != nil {
			return l, err
		}
		st, err := w.serverStats(ctx, addr)
		if err != nil {
			return l, err
		}
		l.Listings++
		l.Items, l.Listed = st.CurrItems, len(ks)
		for _, k := range ks {
			if !seen[k.Key] {
				seen[k.Key] = true
				l.Keys = append(l.Keys, k)
			}
		}
		if uint64(len(ks)) == st.CurrItems {
			l.Agreed = true
			return l, nil
		}
	}
	return l, nil
}

// reclaim has addr's LRU crawler remove its expired items, and returns
// once the crawl has started; a listing waits for it to end. A memcached
// whose crawler cannot is left as it is.
func (w *Writer) reclaim(ctx context.Context, addr net.Addr) error {
	deadline := time.Now().Add(crawlerBusyWait)
	for {
		var line string
		err := w.metaExchange(ctx, addr, []byte("lru_crawler crawl all\r\n"), func(_ io.Reader, l []byte) error {
			line = string(l)
			return nil
		})
		switch {
		case errors.Is(err, errReply), err == nil && !strings.HasPrefix(line, "BUSY"):
			return nil // OK, or a crawler that cannot: the listing says so
		case err != nil:
			return err
		}
		if !waitBusy(ctx, deadline) {
			return errors.Join(ended(ctx), errors.New("memfence: the LRU crawler stayed busy"))
		}
	}
}

// waitBusy waits a moment before asking a busy crawler again; false once
// ctx ended or deadline passed.
func waitBusy(ctx context.Context, deadline time.Time) bool {
	if time.Now().After(deadline) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(20 * time.Millisecond):
		return true
	}
}

// serverKeys lists the keys of one server, waiting for a crawler already
// running.
func (w *Writer) serverKeys(ctx context.Context, addr net.Addr) ([]KeyInfo, error) {
	deadline := time.Now().Add(crawlerBusyWait)
	mode := "hash"
	for {
		ks, busy, err := w.metadump(ctx, addr, mode)
		if errors.Is(err, ErrNoKeyListing) && mode == "hash" {
			mode = "all" // a memcached before the hash walk
			continue
		}
		if !busy {
			return ks, err
		}
		if !waitBusy(ctx, deadline) {
			return nil, errors.Join(ended(ctx), errors.New("memfence: the LRU crawler stayed busy"))
		}
	}
}

// metadump sends "lru_crawler metadump <mode>" to addr and reads the
// listing; busy reports a crawler already running.
func (w *Writer) metadump(ctx context.Context, addr net.Addr, mode string) (_ []KeyInfo, busy bool, _ error) {
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
	if _, err := cn.rw.WriteString("lru_crawler metadump " + mode + "\r\n"); err != nil {
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

// PickServer returns the address of the server the Writer writes key to.
func (w *Writer) PickServer(key string) (string, error) {
	addr, err := w.servers.PickServer(key)
	if err != nil {
		return "", err
	}
	return addr.String(), nil
}
