package memfence_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// TestSelectorPicksTheServer writes through a ketama ring and finds every
// key on the server the ring picks, and on no other.
func TestSelectorPicksTheServer(t *testing.T) {
	a, b := testenv.StartMemcached(t), testenv.StartMemcached(t)
	ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: []hashring.Server{{Addr: a.Addr}, {Addr: b.Addr}}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := memfence.New(memfence.Config{Selector: ring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	direct := []*memcache.Client{memcache.New(a.Addr), memcache.New(b.Addr)}
	var writes []memfence.Write
	for i := range 200 {
		writes = append(writes, memfence.Write{Key: fmt.Sprintf("k%d", i), Value: []byte("v")})
	}
	for i, err := range w.WriteAll(t.Context(), nil, 1, writes[:100]) {
		if err != nil {
			t.Fatalf("%s: %v", writes[i].Key, err)
		}
	}
	for _, wr := range writes[100:] {
		if err := w.Set(t.Context(), wr.Key, wr.Value, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	per := make([]int, 2)
	for _, wr := range writes {
		want := ring.Index(wr.Key)
		per[want]++
		for i, mc := range direct {
			_, err := mc.Get(wr.Key)
			if found := err == nil; found != (i == want) {
				t.Fatalf("key %q on server %d: found %v (%v), ring picks %d", wr.Key, i, found, err, want)
			}
		}
	}
	if per[0] == 0 || per[1] == 0 {
		t.Fatalf("keys per server %v: the test needs both", per)
	}
}

func TestSelectorOrServers(t *testing.T) {
	ring, err := hashring.New(hashring.Config{Servers: []hashring.Server{{Addr: "127.0.0.1:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = memfence.New(memfence.Config{Servers: []string{"127.0.0.1:1"}, Selector: ring})
	if !errors.Is(err, config.ErrBadConfig) {
		t.Fatalf("Servers and Selector: %v", err)
	}
	if _, err := memfence.New(memfence.Config{}); !errors.Is(err, memcache.ErrNoServers) {
		t.Fatalf("neither: %v", err)
	}
}
