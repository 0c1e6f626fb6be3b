package memfence_test

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// Keys lists what each server holds, with its expiry; an expired or
// deleted item is not listed; Get returns the value and the term.
func TestKeysListsEveryServersItems(t *testing.T) {
	a, b := testenv.StartMemcached(t), testenv.StartMemcached(t)
	w, err := memfence.New(memfence.Config{Servers: []string{a.Addr, b.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ctx := testenv.Ctx(t, 30*time.Second)
	want := map[string]bool{}
	for i := range 200 {
		k := "k-" + string(rune('a'+i%26)) + "é" + time.Duration(i).String()
		if err := w.Set(ctx, k, []byte("v"), 0, 3); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	exp := time.Now().Add(time.Hour).Unix()
	if err := w.Set(ctx, "expiring", []byte("v"), int32(exp), 3); err != nil {
		t.Fatal(err)
	}
	if err := w.Set(ctx, "deleted", []byte("v"), 0, 3); err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(ctx, "deleted", 3); err != nil {
		t.Fatal(err)
	}
	ks, err := w.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]bool{}
	got := map[string]bool{}
	for _, k := range ks {
		servers[k.Server] = true
		switch k.Key {
		case "expiring":
			if k.Exptime < exp-2 || k.Exptime > exp+2 {
				t.Errorf("expiring lists exptime %d, want about %d", k.Exptime, exp)
			}
		case "deleted":
			t.Error("a deleted key is listed")
		default:
			if k.Exptime != 0 {
				t.Errorf("%q lists exptime %d, want 0", k.Key, k.Exptime)
			}
			got[k.Key] = true
		}
		if addr, _ := w.PickServer(k.Key); addr != k.Server {
			t.Errorf("%q listed on %s, picked %s", k.Key, k.Server, addr)
		}
	}
	if len(got) != len(want) || !servers[a.Addr] || !servers[b.Addr] {
		t.Fatalf("listed %d of %d keys, on servers %v", len(got), len(want), slices.Collect(maps.Keys(servers)))
	}
	it, err := w.Get(ctx, "expiring")
	if err != nil || string(it.Value) != "v" || it.Term != 3 {
		t.Fatalf("Get = %+v, %v", it, err)
	}
	if _, err := w.Get(ctx, "deleted"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Get of a deleted key: %v", err)
	}
}
