package memfence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// Reads and re-stamps with memcached's meta protocol (memcached 1.6), whose
// mg returns an item's flags, cas id and remaining lifetime together, and
// whose ms stores an item conditional on its cas id with a given lifetime:
// what copying or re-stamping an item needs and the text protocol's get and
// cas do not give.

// Item is an item as a Writer reads it.
type Item struct {
	// Value is the item's value.
	Value []byte
	// Term is the term of the writer that stored it (TermOf its flags).
	Term uint32
	// Flags are the item's flags as stored.
	Flags uint32
	// Exptime is when the item expires, in unix seconds as memcached takes
	// an absolute exptime; zero when it never does.
	Exptime int64
}

// errReply is memcached's ERROR, CLIENT_ERROR or SERVER_ERROR to a
// command of metaExchange: the command is not done, the connection is
// still in step.
var errReply = errors.New("memfence: memcached refused the command")

// metaItem is an item as mg returns it.
type metaItem struct {
	value []byte
	flags uint32
	ttl   int64 // seconds left; -1 when it never expires
	cas   uint64
}

// Get reads key from the server the selector picks; memcache.ErrCacheMiss
// when it is absent.
func (w *Writer) Get(ctx context.Context, key string) (Item, error) {
	addr, err := w.servers.PickServer(key)
	if err != nil {
		return Item{}, err
	}
	now := time.Now().Unix()
	mi, found, err := w.metaGet(ctx, addr, key)
	switch {
	case err != nil:
		return Item{}, err
	case !found:
		return Item{}, memcache.ErrCacheMiss
	}
	it := Item{Value: mi.value, Term: TermOf(mi.flags), Flags: mi.flags}
	if mi.ttl >= 0 {
		it.Exptime = now + max(mi.ttl, 1)
	}
	return it, nil
}

// Restamp rewrites key's item, on the server the selector picks, with the
// same value and lifetime and the flags of term, whatever term it held;
// found is false when the key is absent. It is for
// topology.ResetTerm, which runs while no node writes: it is not fenced.
// An item that expires within the second keeps a second.
func (w *Writer) Restamp(ctx context.Context, key string, term uint32) (found bool, _ error) {
	if err := checkTerm(term); err != nil {
		return false, err
	}
	addr, err := w.servers.PickServer(key)
	if err != nil {
		return false, err
	}
	for range maxAttempts {
		mi, found, err := w.metaGet(ctx, addr, key)
		if err != nil || !found {
			return false, err
		}
		if mi.flags == Flags(term) {
			return true, nil
		}
		ttl := mi.ttl
		switch {
		case ttl < 0:
			ttl = 0 // never expires
		case ttl == 0:
			ttl = 1
		}
		res, err := w.metaSet(ctx, addr, key, mi.value, Flags(term), ttl, mi.cas)
		switch {
		case err != nil:
			return false, err
		case res == "HD":
			return true, nil
		case res == "NF":
			return false, nil
		}
		// EX or NS: it changed since it was read.
	}
	return false, fmt.Errorf("%w: %q", ErrContended, key)
}

// metaGet sends "mg <key> v f t c" to addr.
func (w *Writer) metaGet(ctx context.Context, addr net.Addr, key string) (mi metaItem, found bool, _ error) {
	if !legalKey(key) {
		return metaItem{}, false, classify(fmt.Errorf("%w: %q", memcache.ErrMalformedKey, key))
	}
	err := w.metaExchange(ctx, addr, []byte("mg "+key+" v f t c\r\n"), func(r io.Reader, line []byte) error {
		if bytes.Equal(line, []byte("EN")) {
			return nil
		}
		f := bytes.Fields(line)
		if len(f) < 2 || string(f[0]) != "VA" {
			return fmt.Errorf("memfence: memcached answered %q to mg", line)
		}
		size, err := strconv.Atoi(string(f[1]))
		if err != nil || size < 0 {
			return fmt.Errorf("memfence: memcached answered %q to mg", line)
		}
		mi.ttl = -1
		for _, tok := range f[2:] {
			if len(tok) < 2 {
				continue
			}
			v := string(tok[1:])
			switch tok[0] {
			case 'f':
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return fmt.Errorf("memfence: mg flags %q: %w", v, err)
				}
				mi.flags = uint32(n)
			case 't':
				if mi.ttl, err = strconv.ParseInt(v, 10, 64); err != nil {
					return fmt.Errorf("memfence: mg ttl %q: %w", v, err)
				}
			case 'c':
				if mi.cas, err = strconv.ParseUint(v, 10, 64); err != nil {
					return fmt.Errorf("memfence: mg cas %q: %w", v, err)
				}
			}
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		if !bytes.HasSuffix(buf, crlf) {
			return errors.New("memfence: mg value without its line end")
		}
		mi.value, found = buf[:size], true
		return nil
	})
	return mi, found, err
}

// metaSet sends "ms <key> <size> C<cas> F<flags> T<ttl>" and the value to
// addr and returns memcached's answer: HD (stored), EX (the cas id
// differs), NF (absent) or NS (not stored).
func (w *Writer) metaSet(ctx context.Context, addr net.Addr, key string, value []byte, flags uint32, ttl int64, cas uint64) (string, error) {
	req := fmt.Appendf(nil, "ms %s %d C%d F%d T%d\r\n", key, len(value), cas, flags, ttl)
	req = append(append(req, value...), crlf...)
	var res string
	err := w.metaExchange(ctx, addr, req, func(_ io.Reader, line []byte) error {
		switch s := string(line); s {
		case "HD", "EX", "NF", "NS":
			res = s
			return nil
		default:
			return classify(fmt.Errorf("memfence: memcached answered %q to ms", s))
		}
	})
	return res, err
}

// metaExchange sends req to addr on a pipeline connection and calls read
// with the reply's first line (without its line end) and the rest of the
// reply; the connection is kept only when read returns nil.
func (w *Writer) metaExchange(ctx context.Context, addr net.Addr, req []byte, read func(r io.Reader, line []byte) error) error {
	if err := ended(ctx); err != nil {
		return err
	}
	cn, err := w.pipes.get(addr)
	if err != nil {
		return err
	}
	healthy := false
	defer func() { w.pipes.release(addr, cn, healthy) }()
	if err := cn.nc.SetDeadline(time.Now().Add(w.pipes.timeout)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(time.Now()) })
	defer stop()
	if _, err := cn.rw.Write(req); err != nil {
		return err
	}
	if err := cn.rw.Flush(); err != nil {
		return err
	}
	line, err := cn.rw.ReadSlice('\n')
	if err != nil {
		return err
	}
	line = bytes.TrimRight(line, "\r\n")
	if bytes.HasPrefix(line, []byte("SERVER_ERROR")) || bytes.HasPrefix(line, []byte("CLIENT_ERROR")) || bytes.Equal(line, []byte("ERROR")) {
		return classify(fmt.Errorf("%w: %s", errReply, line))
	}
	if err := read(cn.rw.Reader, bytes.Clone(line)); err != nil {
		return err
	}
	healthy = stop()
	return nil
}

// Holders returns the servers, of every server the selector knows, that
// hold key: where a key absent from its own server went (a read-back on
// the leader tells a misplaced key from a missing one by it).
func (w *Writer) Holders(ctx context.Context, key string) ([]string, error) {
	var out []string
	err := w.servers.Each(func(addr net.Addr) error {
		_, found, err := w.metaGet(ctx, addr, key)
		if found {
			out = append(out, addr.String())
		}
		return err
	})
	return out, err
}
