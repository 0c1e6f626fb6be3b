package memfence_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// The term is in the high 16 bits, the low 16 bits are 0; flags of the
// earlier layout (the whole term) read as that term.
func TestTermOfReadsBothLayouts(t *testing.T) {
	for _, c := range []struct {
		flags, term uint32
	}{
		{0, 0},
		{memfence.Flags(1), 1},
		{65536, 1},
		{memfence.Flags(7), 7},
		{memfence.Flags(memfence.MaxTerm), memfence.MaxTerm},
		{0xffff0000, 65535},
		{1, 1}, // term 1 as the earlier layout wrote it
		{7, 7}, // term 7 likewise
		{0xffff, 0xffff},
		{0x10001, 0x10001}, // an earlier term beyond 65535
		{0xffffffff, 0xffffffff},
	} {
		if got := memfence.TermOf(c.flags); got != c.term {
			t.Errorf("TermOf(%#x) = %d, want %d", c.flags, got, c.term)
		}
	}
	for term := uint32(1); term <= memfence.MaxTerm; term += 997 {
		if f := memfence.Flags(term); f&0xffff != 0 || memfence.TermOf(f) != term {
			t.Fatalf("Flags(%d) = %#x: low bits set or read back as %d", term, f, memfence.TermOf(f))
		}
	}
	if h := memfence.TermHeadroom(65000); h != 535 {
		t.Errorf("TermHeadroom(65000) = %d, want 535", h)
	}
	if h := memfence.TermHeadroom(70000); h != 0 {
		t.Errorf("TermHeadroom(70000) = %d, want 0", h)
	}
}

// Items stamped the earlier way (flags = the term) are compared by their
// term: a writer of an older term is fenced by them, one of a newer term
// overwrites them and stamps the new layout. Compared as raw flags, term
// 6's flags (393216) would pass the earlier layout's term 7 (flags 7).
func TestEarlierLayoutItemsAreComparedByTerm(t *testing.T) {
	w, mc, _ := setup(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	for _, k := range []string{"set", "del", "pipe"} {
		if err := mc.Set(&memcache.Item{Key: k, Value: []byte("v7"), Flags: 7}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Set(ctx, "set", []byte("stale"), 0, 6); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("set under term 6 over an item of term 7 (earlier layout): %v, want ErrFenced", err)
	}
	if err := w.Delete(ctx, "del", 6); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("delete under term 6: %v, want ErrFenced", err)
	}
	errs := w.WriteAll(ctx, nil, 6, []memfence.Write{{Key: "pipe", Value: []byte("stale")}})
	if !errors.Is(errs[0], memfence.ErrFenced) {
		t.Fatalf("pipelined set under term 6: %v, want ErrFenced", errs[0])
	}
	for _, k := range []string{"set", "del", "pipe"} {
		if it := get(t, mc, k); it == nil || string(it.Value) != "v7" || it.Flags != 7 {
			t.Fatalf("%s after the fenced writes: %+v", k, it)
		}
	}
	// Term 8 overwrites them, in the new layout.
	if err := w.Set(ctx, "set", []byte("v8"), 0, 8); err != nil {
		t.Fatal(err)
	}
	if errs := w.WriteAll(ctx, nil, 8, []memfence.Write{{Key: "pipe", Value: []byte("v8")}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	for _, k := range []string{"set", "pipe"} {
		if it := get(t, mc, k); it == nil || string(it.Value) != "v8" || it.Flags != memfence.Flags(8) {
			t.Fatalf("%s after term 8's write: %+v", k, it)
		}
	}
	if err := w.Delete(ctx, "del", 8); err != nil {
		t.Fatal(err)
	}
	if it := get(t, mc, "del"); it != nil {
		t.Fatalf("del after term 8's delete: %+v", it)
	}
	// Get reads the term of either layout.
	it, err := w.Get(ctx, "set")
	if err != nil || it.Term != 8 || it.Flags != memfence.Flags(8) {
		t.Fatalf("Get = %+v, %v", it, err)
	}
}

// A term beyond MaxTerm writes nothing and says why.
func TestTermBeyondMaxIsRefused(t *testing.T) {
	w, mc, _ := setup(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	if err := w.Set(ctx, "max", []byte("v"), 0, memfence.MaxTerm); err != nil {
		t.Fatal(err)
	}
	if it := get(t, mc, "max"); it == nil || it.Flags != 0xffff0000 {
		t.Fatalf("an item of term %d: %+v", memfence.MaxTerm, it)
	}
	over := uint32(memfence.MaxTerm + 1)
	if err := w.Set(ctx, "k", []byte("v"), 0, over); !errors.Is(err, memfence.ErrTermExhausted) {
		t.Fatalf("Set under term %d: %v", over, err)
	}
	if err := w.Delete(ctx, "max", over); !errors.Is(err, memfence.ErrTermExhausted) {
		t.Fatalf("Delete under term %d: %v", over, err)
	}
	for i, err := range w.WriteAll(ctx, nil, over, []memfence.Write{{Key: "a", Value: []byte("v")}, {Key: "b", Delete: true}}) {
		if !errors.Is(err, memfence.ErrTermExhausted) {
			t.Fatalf("WriteAll write %d under term %d: %v", i, over, err)
		}
	}
	if it := get(t, mc, "k"); it != nil {
		t.Fatalf("k written: %+v", it)
	}
}

// Restamp keeps an item's value and lifetime and changes its flags only.
func TestRestampKeepsValueAndLifetime(t *testing.T) {
	w, mc, _ := setup(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	exp := time.Now().Add(time.Hour).Unix()
	if err := w.Set(ctx, "forever", []byte("a"), 0, 9); err != nil {
		t.Fatal(err)
	}
	if err := w.Set(ctx, "hour", []byte{0, 1, 0xff, '\r', '\n'}, int32(exp), 9); err != nil {
		t.Fatal(err)
	}
	if err := mc.Set(&memcache.Item{Key: "earlier", Value: []byte("c"), Flags: 12}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"forever", "hour", "earlier"} {
		found, err := w.Restamp(ctx, k, 0)
		if err != nil || !found {
			t.Fatalf("Restamp(%s) = %v, %v", k, found, err)
		}
		it, err := w.Get(ctx, k)
		if err != nil || it.Flags != 0 || it.Term != 0 {
			t.Fatalf("%s after Restamp: %+v, %v", k, it, err)
		}
	}
	if it, _ := w.Get(ctx, "hour"); string(it.Value) != "\x00\x01\xff\r\n" || it.Exptime < exp-2 || it.Exptime > exp+2 {
		t.Fatalf("hour after Restamp: value %q exptime %d, want exptime about %d", it.Value, it.Exptime, exp)
	}
	if it, _ := w.Get(ctx, "forever"); string(it.Value) != "a" || it.Exptime != 0 {
		t.Fatalf("forever after Restamp: %+v", it)
	}
	if found, err := w.Restamp(ctx, "absent", 0); err != nil || found {
		t.Fatalf("Restamp(absent) = %v, %v", found, err)
	}
}

// ListAgreed lists every item once a listing agrees with the server's
// count; the deleted items (stored expired, and counted until reclaimed)
// do not keep them from agreeing.
func TestListAgreedMatchesTheItemCount(t *testing.T) {
	m := testenv.StartMemcached(t)
	w := newWriter(t, m.Addr)
	ctx := testenv.Ctx(t, 60*time.Second)
	want := map[string]bool{}
	for i := range 3000 {
		k := fmt.Sprintf("k-%d", i)
		if err := w.Set(ctx, k, []byte("v"), 0, 2); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	for i := range 300 {
		k := fmt.Sprintf("k-%d", i*7)
		if err := w.Delete(ctx, k, 2); err != nil {
			t.Fatal(err)
		}
		delete(want, k)
	}
	ls, err := w.ListAgreed(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || !ls[0].Agreed || ls[0].Server != m.Addr {
		t.Fatalf("listing: %+v", ls)
	}
	got := map[string]bool{}
	for _, k := range ls[0].Keys {
		got[k.Key] = true
	}
	if len(got) != len(want) || ls[0].Items != uint64(len(want)) {
		t.Fatalf("listed %d keys, counted %d items, want %d", len(got), ls[0].Items, len(want))
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("%s not listed", k)
		}
	}
}
