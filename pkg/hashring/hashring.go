// Package hashring picks the memcached server of a key the way other
// memcached clients do, so that readers using those clients find every key
// on the server the coordinator wrote it to.
//
// Two distributions exist:
//
//   - Modula is gomemcache's memcache.ServerList: the CRC-32 (IEEE) of the
//     key modulo the number of servers, over the servers in the order given.
//     libmemcached's modula differs (its default hash is one-at-a-time), so
//     only gomemcache readers share it.
//   - Ketama is libmemcached's weighted ketama continuum
//     (MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED; pylibmc's behaviors
//     {"ketama_weighted": True}; php-memcached's OPT_LIBKETAMA_COMPATIBLE):
//     each server gets 160 points scaled by its share of the total weight
//     (computed in single precision exactly as libmemcached does), four
//     points per MD5 digest of "host:port-N" ("host-N" on port 11211); a key
//     goes to the first point at or after the first four bytes of its MD5,
//     read little-endian.
//
// A Ring implements gomemcache's memcache.ServerSelector, so a gomemcache
// client (and memfence) can use it.
package hashring

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// Distribution names how keys are spread over servers.
type Distribution string

// The distributions.
const (
	// Modula is gomemcache's crc32(key) % n.
	Modula Distribution = "modula"
	// Ketama is libmemcached's weighted ketama continuum.
	Ketama Distribution = "ketama"
)

// DefaultDistribution is the distribution used when none is given.
const DefaultDistribution = Modula

// ErrUnknownDistribution is returned for a distribution that is neither
// Modula nor Ketama.
var ErrUnknownDistribution = errors.New("hashring: unknown distribution (want modula or ketama)")

// ParseDistribution returns the distribution named s; "" is
// DefaultDistribution.
func ParseDistribution(s string) (Distribution, error) {
	switch d := Distribution(s); d {
	case "":
		return DefaultDistribution, nil
	case Modula, Ketama:
		return d, nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownDistribution, s)
}

// Server is one memcached server of a ring.
type Server struct {
	// Addr is host:port, or the path of a unix socket. Ketama hashes the
	// host as spelled here: readers must spell it the same way.
	Addr string `json:"addr"`
	// Weight is the server's share of the keys under Ketama, relative to
	// the others'; zero means 1. Modula has no weights: only 0 and 1 are
	// accepted there.
	Weight uint32 `json:"weight,omitempty"`
}

// weight is the server's weight, zero meaning 1 as in libmemcached.
func (s Server) weight() uint32 { return max(s.Weight, 1) }

// ParseServer parses "host:port" or "host:port=weight".
func ParseServer(s string) (Server, error) {
	addr, w, ok := strings.Cut(s, "=")
	if !ok {
		return Server{Addr: s}, nil
	}
	n, err := strconv.ParseUint(w, 10, 32)
	if err != nil || n == 0 {
		return Server{}, fmt.Errorf("hashring: server %q: weight %q is not a positive integer", s, w)
	}
	return Server{Addr: addr, Weight: uint32(n)}, nil
}

// String returns "host:port", or "host:port=weight" for a weight over 1.
func (s Server) String() string {
	if s.Weight > 1 {
		return s.Addr + "=" + strconv.FormatUint(uint64(s.Weight), 10)
	}
	return s.Addr
}

// Config configures a Ring. Zero values mean the defaults noted.
type Config struct {
	// Distribution spreads the keys; "" means DefaultDistribution.
	Distribution Distribution
	// Servers are the servers, in order (the order matters to Modula and
	// breaks ties between Ketama points). At least one is required; none
	// may appear twice.
	Servers []Server
}

// Validate checks the config; its errors are *config.FieldError. An
// address that does not resolve is reported by New.
func (c *Config) Validate() error {
	const pkg = "hashring"
	if _, err := ParseDistribution(string(c.Distribution)); err != nil {
		return config.Errorf(pkg, "Distribution", "%w", err)
	}
	if len(c.Servers) == 0 {
		return config.Errorf(pkg, "Servers", "none given: %w", memcache.ErrNoServers)
	}
	seen := make(map[string]bool, len(c.Servers))
	for _, s := range c.Servers {
		switch {
		case s.Addr == "":
			return config.Errorf(pkg, "Servers", "%v holds an empty address", c.Servers)
		case seen[s.Addr]:
			return config.Errorf(pkg, "Servers", "%q is listed twice", s.Addr)
		case s.Weight > 1 && c.Distribution != Ketama:
			return config.Errorf(pkg, "Servers", "%q has weight %d: only ketama has weights", s.Addr, s.Weight)
		}
		seen[s.Addr] = true
	}
	return nil
}

// Ring picks a key's server. It is immutable and safe for concurrent use.
type Ring struct {
	dist    Distribution
	servers []Server
	addrs   []net.Addr
	modula  *memcache.ServerList // Modula: gomemcache's own selector
	points  []point              // Ketama: the continuum, sorted
}

// point is one point of the ketama continuum.
type point struct {
	value uint32
	index int // into Ring.servers
}

// New returns the ring of cfg. It returns a *config.FieldError for an
// invalid cfg or an address that does not resolve.
func New(cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Distribution, _ = ParseDistribution(string(cfg.Distribution))
	r := &Ring{dist: cfg.Distribution, servers: slices.Clone(cfg.Servers)}
	addrs := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		addrs[i] = s.Addr
	}
	// gomemcache's ServerList resolves the addresses; Ketama hands out the
	// same resolved addresses so both share memcache.Client's connections
	// per address.
	sl := new(memcache.ServerList)
	if err := sl.SetServers(addrs...); err != nil {
		return nil, config.Errorf("hashring", "Servers", "%q: %w", addrs, err)
	}
	_ = sl.Each(func(a net.Addr) error { r.addrs = append(r.addrs, a); return nil })
	if r.dist == Modula {
		r.modula = sl
		return r, nil
	}
	r.points = continuum(r.servers)
	return r, nil
}

// Distribution returns the ring's distribution.
func (r *Ring) Distribution() Distribution { return r.dist }

// Servers returns the ring's servers, in order.
func (r *Ring) Servers() []Server { return slices.Clone(r.servers) }

// PickServer returns the server of key (memcache.ServerSelector).
func (r *Ring) PickServer(key string) (net.Addr, error) {
	return r.addrs[r.Index(key)], nil
}

// ServerName returns the address addr, one of the ring's (PickServer,
// Each), was configured by (Server.Addr), or "" when it is not the ring's
// (memfence.ServerNamer).
func (r *Ring) ServerName(addr net.Addr) string {
	if i := slices.Index(r.addrs, addr); i >= 0 {
		return r.servers[i].Addr
	}
	return ""
}

// Index returns the position in Servers of key's server.
func (r *Ring) Index(key string) int {
	if len(r.servers) == 1 {
		return 0
	}
	if r.dist == Modula {
		a, _ := r.modula.PickServer(key)
		return slices.IndexFunc(r.addrs, func(x net.Addr) bool { return x == a })
	}
	sum := md5.Sum([]byte(key))
	h := binary.LittleEndian.Uint32(sum[:4])
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].value >= h })
	if i == len(r.points) {
		i = 0
	}
	return r.points[i].index
}

// Each calls f with every server's address, in order, until f returns an
// error (memcache.ServerSelector).
func (r *Ring) Each(f func(net.Addr) error) error {
	for _, a := range r.addrs {
		if err := f(a); err != nil {
			return err
		}
	}
	return nil
}

// Ketama's constants, as libmemcached defines them.
const (
	pointsPerServer = 160   // MEMCACHED_POINTS_PER_SERVER_KETAMA
	pointsPerHash   = 4     // four points per MD5 digest
	defaultPort     = 11211 // MEMCACHED_DEFAULT_PORT: omitted from the point names
)

// continuum builds libmemcached's weighted continuum (hosts.cc,
// update_continuum) over servers, every one of them live.
func continuum(servers []Server) []point {
	var total uint64
	for _, s := range servers {
		total += uint64(s.weight())
	}
	live := float32(len(servers))
	var pts []point
	for i, s := range servers {
		// libmemcached computes the share in float; every step is rounded
		// to float32 as its C does, so that the counts agree to the point.
		pct := float32(s.weight()) / float32(total)
		v := float32(float32(float32(pct*pointsPerServer)/pointsPerHash)*live) + float32(0.0000000001)
		n := uint32(math.Floor(float64(v))) * pointsPerHash
		host, port := hostPort(s.Addr)
		for k := uint32(0); k < n/pointsPerHash; k++ {
			var name string
			if port == defaultPort {
				name = host + "-" + strconv.FormatUint(uint64(k), 10)
			} else {
				name = host + ":" + strconv.Itoa(port) + "-" + strconv.FormatUint(uint64(k), 10)
			}
			sum := md5.Sum([]byte(name))
			for a := range pointsPerHash {
				pts = append(pts, point{value: binary.LittleEndian.Uint32(sum[4*a:]), index: i})
			}
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		if a.value != b.value {
			return cmpUint32(a.value, b.value)
		}
		return a.index - b.index
	})
	return pts
}

func cmpUint32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// hostPort splits addr as libmemcached stores a server: the host without
// brackets and the port; a unix socket path has port 0.
func hostPort(addr string) (string, int) {
	if strings.Contains(addr, "/") {
		return addr, 0
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return host, 0
	}
	return host, port
}
