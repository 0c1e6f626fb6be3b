package hashring_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
)

func servers(addrs ...string) []hashring.Server {
	var s []hashring.Server
	for _, a := range addrs {
		s = append(s, hashring.Server{Addr: a})
	}
	return s
}

func mustRing(t *testing.T, cfg hashring.Config) *hashring.Ring {
	t.Helper()
	r, err := hashring.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestModulaIsGomemcacheServerList(t *testing.T) {
	addrs := []string{"127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.2:11213"}
	ring := mustRing(t, hashring.Config{Distribution: hashring.Modula, Servers: servers(addrs...)})
	var sl memcache.ServerList
	if err := sl.SetServers(addrs...); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		key := fmt.Sprintf("k%d-%x", i, rng.Uint64())
		got, _ := ring.PickServer(key)
		want, _ := sl.PickServer(key)
		if got.String() != want.String() {
			t.Fatalf("key %q: ring picks %s, gomemcache %s", key, got, want)
		}
		if addrs[ring.Index(key)] != want.String() {
			t.Fatalf("key %q: Index %d, gomemcache %s", key, ring.Index(key), want)
		}
	}
}

// TestKetamaSpread checks that each server holds about its weighted share of
// keys and that adding a server moves only about its share.
func TestKetamaSpread(t *testing.T) {
	three := servers("127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003")
	four := append(servers(), three...)
	four = append(four, hashring.Server{Addr: "127.0.0.1:20004"})
	r3 := mustRing(t, hashring.Config{Distribution: hashring.Ketama, Servers: three})
	r4 := mustRing(t, hashring.Config{Distribution: hashring.Ketama, Servers: four})
	const n = 30000
	counts := make([]int, 3)
	moved := 0
	for i := range n {
		k := fmt.Sprintf("key-%d", i)
		a, b := r3.Index(k), r4.Index(k)
		counts[a]++
		if a != b {
			moved++
			if b != 3 {
				t.Fatalf("key %q moved from server %d to %d, not to the new one", k, a, b)
			}
		}
	}
	for i, c := range counts {
		if c < n/3*7/10 || c > n/3*13/10 {
			t.Errorf("server %d holds %d of %d keys", i, c, n)
		}
	}
	if moved < n/4*6/10 || moved > n/4*14/10 {
		t.Errorf("%d of %d keys moved to the fourth server", moved, n)
	}
	w := mustRing(t, hashring.Config{Distribution: hashring.Ketama, Servers: []hashring.Server{{Addr: "127.0.0.1:1", Weight: 3}, {Addr: "127.0.0.1:2"}}})
	heavy := 0
	for i := range n {
		if w.Index(fmt.Sprintf("key-%d", i)) == 0 {
			heavy++
		}
	}
	if heavy < n*65/100 || heavy > n*85/100 {
		t.Errorf("weight 3 of 4 holds %d of %d keys", heavy, n)
	}
}

func TestOneServerTakesEveryKey(t *testing.T) {
	for _, d := range []hashring.Distribution{hashring.Modula, hashring.Ketama} {
		r := mustRing(t, hashring.Config{Distribution: d, Servers: servers("127.0.0.1:1")})
		if r.Index("anything") != 0 {
			t.Fatalf("%s: one server, index %d", d, r.Index("anything"))
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  hashring.Config
		is   error
	}{
		{"no servers", hashring.Config{}, memcache.ErrNoServers},
		{"unknown distribution", hashring.Config{Distribution: "rendezvous", Servers: servers("a:1")}, hashring.ErrUnknownDistribution},
		{"empty address", hashring.Config{Servers: servers("a:1", "")}, config.ErrBadConfig},
		{"twice", hashring.Config{Servers: servers("a:1", "a:1")}, config.ErrBadConfig},
		{"modula weights", hashring.Config{Servers: []hashring.Server{{Addr: "a:1", Weight: 2}}}, config.ErrBadConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := hashring.New(tc.cfg)
			var fe *config.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, tc.is) {
				t.Fatalf("New: %v, want a FieldError matching %v", err, tc.is)
			}
		})
	}
	if _, err := hashring.New(hashring.Config{Servers: servers("no-such-host.invalid:x")}); err == nil {
		t.Fatal("an address that does not resolve is accepted")
	}
	if r := mustRing(t, hashring.Config{Servers: servers("127.0.0.1:1")}); r.Distribution() != hashring.Modula {
		t.Fatalf("default distribution %q", r.Distribution())
	}
}

func TestParse(t *testing.T) {
	if s, err := hashring.ParseServer("10.0.0.1:11211=3"); err != nil || s != (hashring.Server{Addr: "10.0.0.1:11211", Weight: 3}) || s.String() != "10.0.0.1:11211=3" {
		t.Fatalf("ParseServer: %+v, %v", s, err)
	}
	for _, bad := range []string{"a:1=0", "a:1=x", "a:1=-2"} {
		if _, err := hashring.ParseServer(bad); err == nil {
			t.Errorf("ParseServer(%q) accepted", bad)
		}
	}
	if _, err := hashring.ParseDistribution("Ketama"); !errors.Is(err, hashring.ErrUnknownDistribution) {
		t.Fatalf("ParseDistribution(Ketama): %v", err)
	}
}

// ServerName gives each address the ring picks the address it was
// configured by, before it was resolved.
func TestServerName(t *testing.T) {
	for _, d := range []hashring.Distribution{hashring.Modula, hashring.Ketama} {
		r := mustRing(t, hashring.Config{Distribution: d, Servers: servers("localhost:11211", "127.0.0.2:11211")})
		seen := map[string]bool{}
		for i := range 200 {
			k := fmt.Sprint("key-", i)
			addr, err := r.PickServer(k)
			if err != nil {
				t.Fatal(err)
			}
			name := r.ServerName(addr)
			if want := r.Servers()[r.Index(k)].Addr; name != want {
				t.Fatalf("%s: ServerName(%s) = %q, want %q", d, addr, name, want)
			}
			seen[name] = true
		}
		if !seen["localhost:11211"] || !seen["127.0.0.2:11211"] {
			t.Errorf("%s: names seen %v, want both servers", d, seen)
		}
		other := mustRing(t, hashring.Config{Distribution: d, Servers: servers("127.0.0.3:11211")})
		addr, _ := other.PickServer("k")
		if name := r.ServerName(addr); name != "" {
			t.Errorf("%s: ServerName of another ring's address = %q, want empty", d, name)
		}
	}
}
