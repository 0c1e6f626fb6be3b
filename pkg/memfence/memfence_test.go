package memfence_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

func setup(t *testing.T) (*memfence.Writer, *memcache.Client, *testenv.Memcached) {
	m := testenv.StartMemcached(t)
	return newWriter(t, m.Addr), memcache.New(m.Addr), m
}

// newWriter returns a Writer to the servers, closed when t ends.
func newWriter(t testing.TB, servers ...string) *memfence.Writer {
	t.Helper()
	w, err := memfence.New(memfence.Config{Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func get(t *testing.T, mc *memcache.Client, key string) *memcache.Item {
	t.Helper()
	it, err := mc.Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func TestSetStampsTermAndRefusesOlderTerms(t *testing.T) {
	w, mc, _ := setup(t)
	if err := w.Set(t.Context(), "k", []byte("v3"), 0, 3); err != nil {
		t.Fatal(err)
	}
	if it := get(t, mc, "k"); string(it.Value) != "v3" || it.Flags != memfence.Flags(3) {
		t.Fatalf("got %q flags %d", it.Value, it.Flags)
	}
	// Same term and newer terms may write.
	if err := w.Set(t.Context(), "k", []byte("v3b"), 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := w.Set(t.Context(), "k", []byte("v5"), 0, 5); err != nil {
		t.Fatal(err)
	}
	// A former leader (term 4) is fenced off, and the value stays.
	if err := w.Set(t.Context(), "k", []byte("stale"), 0, 4); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("stale set: %v", err)
	}
	if err := w.Delete(t.Context(), "k", 4); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("stale delete: %v", err)
	}
	if it := get(t, mc, "k"); string(it.Value) != "v5" || it.Flags != memfence.Flags(5) {
		t.Fatalf("after fenced writes: %q flags %d", it.Value, it.Flags)
	}
}

func TestDeleteIsConditionalAndIdempotent(t *testing.T) {
	w, mc, _ := setup(t)
	if err := w.Delete(t.Context(), "absent", 1); err != nil {
		t.Fatalf("delete of an absent key: %v", err)
	}
	if err := w.Set(t.Context(), "k", []byte("v"), 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(t.Context(), "k", 2); err != nil {
		t.Fatal(err)
	}
	if it := get(t, mc, "k"); it != nil {
		t.Fatalf("still there: %q", it.Value)
	}
	if err := w.Delete(t.Context(), "k", 2); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestExpirationIsPassedOn(t *testing.T) {
	w, mc, _ := setup(t)
	// memcached treats a negative exptime as already expired; an item that
	// should live has the positive expiration we set, which we can read
	// back only indirectly: it exists after the set.
	if err := w.Set(t.Context(), "k", []byte("v"), 3600, 1); err != nil {
		t.Fatal(err)
	}
	if it := get(t, mc, "k"); it == nil {
		t.Fatal("item with an expiration of an hour is missing")
	}
}

func TestOversizedItemIsRejectedForGood(t *testing.T) {
	w, _, _ := setup(t)
	err := w.Set(t.Context(), "k", bytes.Repeat([]byte("x"), 2<<20), 0, 1)
	if !errors.Is(err, memfence.ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
}

func TestMemcachedDownIsTransient(t *testing.T) {
	w, _, m := setup(t)
	m.Stop()
	err := w.Set(t.Context(), "k", []byte("v"), 0, 1)
	if err == nil || errors.Is(err, memfence.ErrRejected) || errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("got %v, want a transient error", err)
	}
	m.Start()
	testenv.Eventually(t, 10*time.Second, func() bool { return w.Set(t.Context(), "k", []byte("v"), 0, 1) == nil }, "write after restart")
}

// A snapshot is only a first guess: a key written by a newer term after the
// snapshot was read still fences the write, whether the snapshot held the
// key or saw it absent, and a key the snapshot held unchanged is written
// from it.
func TestWritesFromASnapshotStillFence(t *testing.T) {
	w, mc, m := setup(t)
	for _, k := range []string{"held", "deleted", "same"} {
		if err := w.Set(t.Context(), k, []byte("v2"), 0, 2); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := w.Read(t.Context(), []string{"held", "absent", "deleted", "same", "never"})
	if err != nil {
		t.Fatal(err)
	}
	// A newer leader (term 3) writes after the snapshot was read.
	newer := newWriter(t, m.Addr)
	if err := newer.Set(t.Context(), "held", []byte("v3"), 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := newer.Set(t.Context(), "absent", []byte("v3"), 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := newer.Set(t.Context(), "deleted", []byte("v3"), 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrom(t.Context(), snap, memfence.Write{Key: "held", Value: []byte("stale")}, 2); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("set of a key changed since the snapshot: %v", err)
	}
	if err := w.WriteFrom(t.Context(), snap, memfence.Write{Key: "absent", Value: []byte("stale")}, 2); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("set of a key added since the snapshot: %v", err)
	}
	if err := w.WriteFrom(t.Context(), snap, memfence.Write{Key: "deleted", Delete: true}, 2); !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("delete of a key changed since the snapshot: %v", err)
	}
	for _, k := range []string{"held", "absent", "deleted"} {
		if it := get(t, mc, k); it == nil || string(it.Value) != "v3" || it.Flags != memfence.Flags(3) {
			t.Fatalf("%s after fenced writes: %+v", k, it)
		}
	}
	if err := w.WriteFrom(t.Context(), snap, memfence.Write{Key: "same", Value: []byte("v2b")}, 2); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrom(t.Context(), snap, memfence.Write{Key: "never", Value: []byte("v2")}, 2); err != nil {
		t.Fatal(err)
	}
	// Each key of a snapshot serves one write; the next reads afresh.
	if err := w.WriteFrom(t.Context(), snap, memfence.Write{Key: "same", Value: []byte("v2c")}, 2); err != nil {
		t.Fatal(err)
	}
	if it := get(t, mc, "same"); string(it.Value) != "v2c" || it.Flags != memfence.Flags(2) {
		t.Fatalf("same: %q flags %d", it.Value, it.Flags)
	}
	if it := get(t, mc, "never"); it == nil || string(it.Value) != "v2" {
		t.Fatalf("never: %+v", it)
	}
}

// Once its context has ended, a writer sends nothing: every call fails with
// the context's error and memcached is left as it was.
func TestEndedContextWritesNothing(t *testing.T) {
	w, mc, _ := setup(t)
	if err := w.Set(t.Context(), "k", []byte("old"), 0, 1); err != nil {
		t.Fatal(err)
	}
	snap, err := w.Read(t.Context(), []string{"k", "absent"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Set(ctx, "k", []byte("new"), 0, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Set: %v, want context.Canceled", err)
	}
	if err := w.Delete(ctx, "k", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete: %v, want context.Canceled", err)
	}
	if _, err := w.Read(ctx, []string{"k"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Read: %v, want context.Canceled", err)
	}
	for i, err := range w.WriteAll(ctx, snap, 1, []memfence.Write{{Key: "k", Value: []byte("new")}, {Key: "absent", Value: []byte("new")}}) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("WriteAll write %d: %v, want context.Canceled", i, err)
		}
	}
	if it := get(t, mc, "k"); it == nil || string(it.Value) != "old" {
		t.Errorf("k = %v, want old", it)
	}
	if it := get(t, mc, "absent"); it != nil {
		t.Errorf("absent = %q, want absent", it.Value)
	}
}
