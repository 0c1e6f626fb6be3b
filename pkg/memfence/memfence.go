// Package memfence writes to memcached under a leadership term so that a
// former leader cannot overwrite a value written under a later term (G5).
//
// Every item the coordinator writes carries the writer's term in memcached's
// 32-bit item flags. A set reads the item with gets; if the stored term is
// newer than the writer's, the write is refused with ErrFenced, otherwise it
// is written with cas (or add when the key is absent), so a concurrent write
// by anyone in between makes the attempt start over. A delete is a cas that
// stores an empty, already-expired item, so it too is conditional on what it
// read: memcached treats a negative expiration as "expired at once".
//
// The remaining window: an absent key (never written, or deleted) carries no
// term, so a former leader that validated its lease, then paused before its
// add, can recreate it after a newer leader deleted it. The applier bounds
// this by checking its lease before every write; see the README.
package memfence

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"
)

// Errors returned by Writer.
var (
	// ErrFenced means the item was written under a newer term: the writer is
	// no longer the leader and must stop.
	ErrFenced = errors.New("memfence: item holds a newer term")
	// ErrRejected means memcached refused the item for good (too large for
	// its item size, say); retrying cannot help.
	ErrRejected = errors.New("memfence: memcached refused the item")
	// ErrContended means the key changed under every attempt.
	ErrContended = errors.New("memfence: key kept changing during the write")
)

// maxAttempts bounds the read-compare-write loop under contention.
const maxAttempts = 64

// Writer writes fenced items.
type Writer struct {
	mc *memcache.Client
}

// New returns a Writer over mc.
func New(mc *memcache.Client) *Writer { return &Writer{mc: mc} }

// Client returns the underlying memcached client.
func (w *Writer) Client() *memcache.Client { return w.mc }

// Set stores value under key with the given expiration (memcached exptime
// seconds), stamped with term.
func (w *Writer) Set(key string, value []byte, exptime int32, term uint32) error {
	return w.SetFrom(nil, key, value, exptime, term)
}

// Delete removes key if the term stored with it is not newer than term.
func (w *Writer) Delete(key string, term uint32) error {
	return w.DeleteFrom(nil, key, term)
}

// Snapshot holds keys read together with one multi-key gets, so that writes
// to many keys need one read between them instead of one each. A write that
// starts from a snapshot uses its key's item for its first attempt only; the
// item's cas id still makes the write conditional on nothing having changed
// since the read, and any later attempt reads the key again. A snapshot is
// for one writer goroutine; each of its keys serves one write.
type Snapshot struct {
	items map[string]*memcache.Item // found keys; nil entries are consumed
	read  map[string]bool           // every key read, found or not
}

// Read reads keys with one gets command per memcached server.
func (w *Writer) Read(keys []string) (*Snapshot, error) {
	items, err := w.mc.GetMulti(keys)
	if err != nil {
		return nil, classify(err)
	}
	read := make(map[string]bool, len(keys))
	for _, k := range keys {
		read[k] = true
	}
	return &Snapshot{items: items, read: read}, nil
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

// SetFrom is Set starting from key's item in s (which may be nil).
func (w *Writer) SetFrom(s *Snapshot, key string, value []byte, exptime int32, term uint32) error {
	for range maxAttempts {
		it, err := w.get(s, key)
		switch {
		case errors.Is(err, memcache.ErrCacheMiss):
			err = w.mc.Add(&memcache.Item{Key: key, Value: value, Flags: term, Expiration: exptime})
			if errors.Is(err, memcache.ErrNotStored) {
				continue // someone added it first: read it again
			}
			return classify(err)
		case err != nil:
			return classify(err)
		}
		if it.Flags > term {
			return fmt.Errorf("%w: key %q has term %d, writer has %d", ErrFenced, key, it.Flags, term)
		}
		it.Value, it.Flags, it.Expiration = value, term, exptime
		err = w.mc.CompareAndSwap(it)
		if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrCacheMiss) {
			continue
		}
		return classify(err)
	}
	return fmt.Errorf("%w: %q", ErrContended, key)
}

// DeleteFrom is Delete starting from key's item in s (which may be nil).
func (w *Writer) DeleteFrom(s *Snapshot, key string, term uint32) error {
	for range maxAttempts {
		it, err := w.get(s, key)
		switch {
		case errors.Is(err, memcache.ErrCacheMiss):
			return nil
		case err != nil:
			return classify(err)
		}
		if it.Flags > term {
			return fmt.Errorf("%w: key %q has term %d, writer has %d", ErrFenced, key, it.Flags, term)
		}
		it.Value, it.Flags, it.Expiration = nil, term, -1
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

// classify marks memcached's permanent refusals as ErrRejected; every other
// error (connection refused, timeout) is transient and returned as it is.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, memcache.ErrMalformedKey) {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "SERVER_ERROR object too large") || strings.Contains(msg, "CLIENT_ERROR") {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	return err
}
