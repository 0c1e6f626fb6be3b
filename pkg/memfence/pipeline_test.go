package memfence_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// stats reads memcached's general statistics over a connection of its own.
func stats(t *testing.T, addr string) map[string]int64 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("stats\r\n")); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]int64)
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(line)
		if len(f) == 1 && f[0] == "END" {
			return m
		}
		if len(f) == 3 && f[0] == "STAT" {
			if v, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				m[f[1]] = v
			}
		}
	}
}

// WriteAll makes every kind of write from one snapshot in one exchange:
// cas on present keys, add on absent ones, a delete of a present and of an
// absent key. A key under a newer term is fenced, an item memcached refuses
// and a key it cannot hold are rejected, and the writes after them in the
// pipeline are still made: memcached swallows a refused item's data.
func TestWriteAllMakesEveryWriteInOneExchange(t *testing.T) {
	w, mc, m := setup(t)
	for k, term := range map[string]uint32{"held": 2, "gone": 2, "newer": 9} {
		if err := w.Set(t.Context(), k, []byte("old"), 0, term); err != nil {
			t.Fatal(err)
		}
	}
	tooBig := bytes.Repeat([]byte("x"), 2<<20) // over memcached's default 1 MiB item size
	writes := []memfence.Write{
		{Key: "held", Value: []byte("v3")},
		{Key: "absent", Value: []byte("v3"), Exptime: 3600},
		{Key: "big", Value: tooBig},
		{Key: "gone", Delete: true},
		{Key: "never", Delete: true},
		{Key: "newer", Value: []byte("stale")},
		{Key: "bad key", Value: []byte("v3")},
		{Key: "held", Value: []byte("twice")},
		{Key: "after", Value: []byte("v3")},
	}
	snap, err := w.Read(t.Context(), []string{"held", "absent", "big", "gone", "never", "newer", "after"})
	if err != nil {
		t.Fatal(err)
	}
	before := stats(t, m.Addr)
	errs := w.WriteAll(t.Context(), snap, 3, writes)
	after := stats(t, m.Addr)

	anyErr := errors.New("any error")
	for i, want := range []error{nil, nil, memfence.ErrRejected, nil, nil, memfence.ErrFenced, memfence.ErrRejected, anyErr, nil} {
		switch {
		case want == nil && errs[i] != nil:
			t.Errorf("write %d (%s): %v", i, writes[i].Key, errs[i])
		case want == anyErr && errs[i] == nil:
			t.Errorf("write %d (%s again): no error, want one", i, writes[i].Key)
		case want != nil && want != anyErr && !errors.Is(errs[i], want):
			t.Errorf("write %d (%s): %v, want %v", i, writes[i].Key, errs[i], want)
		}
	}
	if !errors.Is(errs[6], memcache.ErrMalformedKey) {
		t.Errorf("write 6 (bad key): %v does not say why (memcache.ErrMalformedKey)", errs[6])
	}
	for k, want := range map[string]string{"held": "v3", "absent": "v3", "after": "v3", "newer": "old"} {
		it := get(t, mc, k)
		if it == nil || string(it.Value) != want {
			t.Errorf("%s = %v, want %q", k, it, want)
			continue
		}
		if wantTerm := map[bool]uint32{true: 9, false: 3}[k == "newer"]; memfence.TermOf(it.Flags) != wantTerm {
			t.Errorf("%s has term %d, want %d", k, it.Flags, wantTerm)
		}
	}
	for _, k := range []string{"big", "gone", "never"} {
		if it := get(t, mc, k); it != nil {
			t.Errorf("%s = %q, want absent", k, it.Value)
		}
	}
	// Nothing was read again, and the writes went out on one connection
	// (the other one is the one that read the statistics).
	if d := after["cmd_get"] - before["cmd_get"]; d != 0 {
		t.Errorf("%d keys read again by WriteAll, want 0", d)
	}
	if d := after["total_connections"] - before["total_connections"] - 1; d != 1 {
		t.Errorf("%d connections opened by WriteAll, want 1", d)
	}
	if d := after["cas_hits"] - before["cas_hits"]; d != 2 {
		t.Errorf("%d cas hits, want 2 (held, gone)", d)
	}
}

// A key that changed since the snapshot was read is written again from a
// fresh read: changed under the same term, deleted, added, or written under
// a newer term (which fences the write). Keys the snapshot does not hold
// are read by WriteAll.
func TestWriteAllWritesChangedKeysAgain(t *testing.T) {
	w, mc, m := setup(t)
	for _, k := range []string{"changed", "deleted", "fenced"} {
		if err := w.Set(t.Context(), k, []byte("v2"), 0, 2); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := w.Read(t.Context(), []string{"changed", "deleted", "added", "fenced"})
	if err != nil {
		t.Fatal(err)
	}
	other := newWriter(t, m.Addr)
	if err := other.Set(t.Context(), "changed", []byte("other"), 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := other.Delete(t.Context(), "deleted", 2); err != nil {
		t.Fatal(err)
	}
	if err := other.Set(t.Context(), "added", []byte("other"), 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := other.Set(t.Context(), "fenced", []byte("newer"), 0, 5); err != nil {
		t.Fatal(err)
	}
	if err := w.Set(t.Context(), "unread", []byte("v2"), 0, 2); err != nil {
		t.Fatal(err)
	}
	errs := w.WriteAll(t.Context(), snap, 3, []memfence.Write{
		{Key: "changed", Value: []byte("v3")},
		{Key: "deleted", Value: []byte("v3")},
		{Key: "added", Value: []byte("v3")},
		{Key: "fenced", Value: []byte("v3")},
		{Key: "unread", Value: []byte("v3")},
	})
	for i, k := range []string{"changed", "deleted", "added", "fenced", "unread"} {
		want, wantErr := "v3", error(nil)
		if k == "fenced" {
			want, wantErr = "newer", memfence.ErrFenced
		}
		if !errors.Is(errs[i], wantErr) || (wantErr == nil && errs[i] != nil) {
			t.Errorf("%s: %v, want %v", k, errs[i], wantErr)
		}
		if it := get(t, mc, k); it == nil || string(it.Value) != want {
			t.Errorf("%s = %v, want %q", k, it, want)
		}
	}
}

// A pipelined delete is a cas on the item it read, like a set: when a newer
// leader wrote the key after the snapshot was read, the delete is fenced
// and the newer value stays (G5). A delete of a key that already held a
// newer term when read is fenced without being sent, and one of a key
// changed under the same term since is made again from a fresh read.
func TestWriteAllDeleteIsFencedByANewerTerm(t *testing.T) {
	w, mc, m := setup(t)
	for _, k := range []string{"overwritten", "newer", "changed"} {
		if err := w.Set(t.Context(), k, []byte("v2"), 0, 2); err != nil {
			t.Fatal(err)
		}
	}
	newer := newWriter(t, m.Addr)
	if err := newer.Set(t.Context(), "newer", []byte("v5"), 0, 5); err != nil {
		t.Fatal(err)
	}
	snap, err := w.Read(t.Context(), []string{"overwritten", "newer", "changed"})
	if err != nil {
		t.Fatal(err)
	}
	// After the read: a newer leader writes one key, the same term another.
	if err := newer.Set(t.Context(), "overwritten", []byte("v5"), 0, 5); err != nil {
		t.Fatal(err)
	}
	if err := w.Set(t.Context(), "changed", []byte("v3"), 0, 3); err != nil {
		t.Fatal(err)
	}
	errs := w.WriteAll(t.Context(), snap, 3, []memfence.Write{
		{Key: "overwritten", Delete: true},
		{Key: "newer", Delete: true},
		{Key: "changed", Delete: true},
	})
	for i, k := range []string{"overwritten", "newer"} {
		if !errors.Is(errs[i], memfence.ErrFenced) {
			t.Errorf("delete of %s, which holds term 5: %v, want ErrFenced", k, errs[i])
		}
		if it := get(t, mc, k); it == nil || string(it.Value) != "v5" || memfence.TermOf(it.Flags) != 5 {
			t.Errorf("%s after a fenced delete: %+v, want v5 under term 5", k, it)
		}
	}
	if errs[2] != nil {
		t.Errorf("delete of changed: %v", errs[2])
	}
	if it := get(t, mc, "changed"); it != nil {
		t.Errorf("changed = %q, want deleted", it.Value)
	}
}

// Items larger than one pipeline's worth of data go in several exchanges.
func TestWriteAllSplitsLargeData(t *testing.T) {
	w, mc, _ := setup(t)
	value := bytes.Repeat([]byte("v"), 300<<10)
	var writes []memfence.Write
	for i := range 8 {
		writes = append(writes, memfence.Write{Key: fmt.Sprintf("k%d", i), Value: value})
	}
	for i, err := range w.WriteAll(t.Context(), nil, 1, writes) {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	for _, wr := range writes {
		if it := get(t, mc, wr.Key); it == nil || !bytes.Equal(it.Value, value) {
			t.Errorf("%s not written", wr.Key)
		}
	}
}

// Each key goes to the server memcache.ServerList picks for it, and the
// servers' pipelines all complete.
func TestWriteAllSpreadsKeysOverServers(t *testing.T) {
	a, b := testenv.StartMemcached(t), testenv.StartMemcached(t)
	w := newWriter(t, a.Addr, b.Addr)
	var ss memcache.ServerList
	if err := ss.SetServers(a.Addr, b.Addr); err != nil {
		t.Fatal(err)
	}
	var writes []memfence.Write
	for i := range 64 {
		writes = append(writes, memfence.Write{Key: fmt.Sprintf("k%d", i), Value: []byte(strconv.Itoa(i))})
	}
	for i, err := range w.WriteAll(t.Context(), nil, 1, writes) {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	direct := map[string]*memcache.Client{a.Addr: memcache.New(a.Addr), b.Addr: memcache.New(b.Addr)}
	perServer := map[string]int{}
	for _, wr := range writes {
		addr, err := ss.PickServer(wr.Key)
		if err != nil {
			t.Fatal(err)
		}
		if it := get(t, direct[addr.String()], wr.Key); it == nil || !bytes.Equal(it.Value, wr.Value) {
			t.Errorf("%s not on %s", wr.Key, addr)
		}
		perServer[addr.String()]++
	}
	if len(perServer) != 2 {
		t.Errorf("keys per server %v: the test needs keys on both", perServer)
	}
}

// With memcached down every write fails transiently; once it is back, the
// pooled connections it broke are dropped and the writes succeed.
func TestWriteAllMemcachedDownIsTransient(t *testing.T) {
	w, mc, m := setup(t)
	writes := []memfence.Write{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}
	for i, err := range w.WriteAll(t.Context(), nil, 1, writes) { // fills the pool
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	m.Stop()
	for i, err := range w.WriteAll(t.Context(), nil, 1, writes) {
		if err == nil || errors.Is(err, memfence.ErrRejected) || errors.Is(err, memfence.ErrFenced) {
			t.Errorf("write %d with memcached down: %v, want a transient error", i, err)
		}
	}
	m.Start()
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, err := range w.WriteAll(t.Context(), nil, 1, writes) {
			if err != nil {
				return false
			}
		}
		return true
	}, "writes after the restart")
	if it := get(t, mc, "b"); it == nil || string(it.Value) != "2" {
		t.Errorf("b = %v after the restart", it)
	}
}
