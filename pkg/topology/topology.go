// Package topology keeps a namespace's pool of memcached servers in etcd:
// the servers (with optional weights), the distribution that spreads keys
// over them, and an epoch that grows with every change. Every node of the
// namespace must write with the same topology, or two leaders in turn
// write one key to two servers and a reader sees an old value; a node whose
// own servers disagree with etcd's refuses to lead (ErrMismatch).
//
// The topology is one JSON value under keyspace.Layout.Topology():
//
//	{"distribution":"ketama","servers":[{"addr":"10.0.0.1:11211"},{"addr":"10.0.0.2:11211","weight":2}],"epoch":3}
//
// Ensure writes it on a namespace that has none, in a transaction that only
// creates it; Set replaces it, conditional on the version it read, and
// bumps the epoch. The leader takes a new topology between rounds: Migrate
// moves the keys whose server changes and records it as Applied, the
// topology the leaders write with. The package also keeps the record of
// memcached restarts the leaders found (RecordRestarts).
package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Errors returned by the package.
var (
	// ErrMismatch means a node's servers or distribution differ from the
	// namespace's topology in etcd; it is matched by every *MismatchError.
	ErrMismatch = errors.New("topology: this node's memcached servers differ from the namespace's topology in etcd")
	// ErrNotFound means the namespace has no topology in etcd.
	ErrNotFound = errors.New("topology: the namespace has no topology in etcd")
	// ErrChanged means the topology changed between Set's read and its
	// write; nothing was written.
	ErrChanged = errors.New("topology: changed by someone else meanwhile; nothing written")
	// ErrCorrupt means the stored value does not decode.
	ErrCorrupt = errors.New("topology: stored value does not decode")
)

// Topology is a namespace's pool of memcached servers.
type Topology struct {
	// Distribution spreads keys over Servers.
	Distribution hashring.Distribution `json:"distribution"`
	// Servers are the servers in order; the order matters.
	Servers []hashring.Server `json:"servers"`
	// Epoch is 1 for the first topology of a namespace and grows by one
	// with every Set; zero in a topology not read from etcd.
	Epoch uint64 `json:"epoch"`
}

// Ring is the hashring configuration of t.
func (t Topology) Ring() hashring.Config {
	return hashring.Config{Distribution: t.Distribution, Servers: slices.Clone(t.Servers)}
}

// Validate checks t as hashring.Config.Validate does (its errors are
// *config.FieldError).
func (t Topology) Validate() error {
	c := t.Ring()
	return c.Validate()
}

// normal returns t with the default distribution filled in and weights of
// 1 written as 0, so equal topologies compare equal.
func (t Topology) normal() Topology {
	t.Distribution, _ = hashring.ParseDistribution(string(t.Distribution))
	t.Servers = slices.Clone(t.Servers)
	for i := range t.Servers {
		if t.Servers[i].Weight == 1 {
			t.Servers[i].Weight = 0
		}
	}
	return t
}

// String is the topology as flags spell it, with its epoch when it has
// one: "ketama 10.0.0.1:11211,10.0.0.2:11211=2 (epoch 3)".
func (t Topology) String() string {
	t = t.normal()
	ss := make([]string, len(t.Servers))
	for i, s := range t.Servers {
		ss[i] = s.String()
	}
	if t.Epoch == 0 {
		return fmt.Sprintf("%s %s", t.Distribution, strings.Join(ss, ","))
	}
	return fmt.Sprintf("%s %s (epoch %d)", t.Distribution, strings.Join(ss, ","), t.Epoch)
}

// Diff returns why t and o spread keys differently, "" when they do not:
// the same distribution, the same servers in the same order with the same
// weights. Epochs are not compared.
func (t Topology) Diff(o Topology) string {
	t, o = t.normal(), o.normal()
	if t.Distribution != o.Distribution {
		return fmt.Sprintf("distribution %s, not %s", t.Distribution, o.Distribution)
	}
	if slices.Equal(t.Servers, o.Servers) {
		return ""
	}
	addrs := func(ss []hashring.Server) []string {
		a := make([]string, len(ss))
		for i, s := range ss {
			a[i] = s.Addr
		}
		return a
	}
	ta, oa := addrs(t.Servers), addrs(o.Servers)
	sorted := func(a []string) []string { a = slices.Clone(a); slices.Sort(a); return a }
	switch {
	case len(ta) != len(oa):
		return fmt.Sprintf("%d servers, not %d", len(ta), len(oa))
	case slices.Equal(sorted(ta), sorted(oa)) && !slices.Equal(ta, oa):
		return fmt.Sprintf("the same servers in another order (%s, not %s)", strings.Join(ta, ","), strings.Join(oa, ","))
	}
	for i := range t.Servers {
		if t.Servers[i] != o.Servers[i] {
			return fmt.Sprintf("server %d is %s, not %s", i+1, t.Servers[i], o.Servers[i])
		}
	}
	return ""
}

// MismatchError is a node's topology that differs from etcd's.
type MismatchError struct {
	// Local is the node's topology (its flags), Stored etcd's.
	Local, Stored Topology
	// Reason says how they differ (Local.Diff(Stored)).
	Reason string
}

// Error says how the topologies differ and what to do.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%v: this node has %s, etcd has %s: %s; start the node with etcd's servers and distribution, or change etcd's with `coordinator topology set`",
		ErrMismatch, e.Local, e.Stored, e.Reason)
}

// Is matches ErrMismatch.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Get reads the namespace's topology; ErrNotFound when it has none.
func Get(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (Topology, error) {
	t, _, err := get(ctx, cli, l)
	return t, err
}

// get reads the topology and the mod revision of its key.
func get(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (Topology, int64, error) {
	resp, err := cli.Get(ctx, l.Topology())
	if err != nil {
		return Topology{}, 0, fmt.Errorf("topology: read %s: %w", l.Topology(), err)
	}
	if len(resp.Kvs) == 0 {
		return Topology{}, 0, fmt.Errorf("%w (%s)", ErrNotFound, l.Topology())
	}
	t, err := decode(resp.Kvs[0].Value)
	return t, resp.Kvs[0].ModRevision, err
}

// Read is Get with the etcd revision it read at: a watch of
// keyspace.Layout.Topology() from the revision after it sees every later
// change.
func Read(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (Topology, int64, error) {
	resp, err := cli.Get(ctx, l.Topology())
	if err != nil {
		return Topology{}, 0, fmt.Errorf("topology: read %s: %w", l.Topology(), err)
	}
	if len(resp.Kvs) == 0 {
		return Topology{}, resp.Header.Revision, fmt.Errorf("%w (%s)", ErrNotFound, l.Topology())
	}
	t, err := Decode(resp.Kvs[0].Value)
	return t, resp.Header.Revision, err
}

// Decode decodes and checks a stored topology; its errors match
// ErrCorrupt.
func Decode(b []byte) (Topology, error) { return decode(b) }

func decode(b []byte) (Topology, error) {
	var t Topology
	if err := json.Unmarshal(b, &t); err != nil {
		return Topology{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := t.Validate(); err != nil {
		return Topology{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return t.normal(), nil
}

func encode(t Topology) []byte {
	b, err := json.Marshal(t.normal())
	if err != nil {
		panic(err) // a struct of strings and integers always encodes
	}
	return b
}

// Ensure checks local (a node's servers and distribution) against the
// namespace's topology. On a namespace without one, it writes local with
// epoch 1, in a transaction that only creates the key, so of two nodes
// starting at once one writes and the other compares. It returns the
// topology in etcd, and a *MismatchError (matching ErrMismatch) when local
// differs from it. An invalid local is a *config.FieldError.
func Ensure(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, local Topology) (Topology, error) {
	if err := local.Validate(); err != nil {
		return Topology{}, err
	}
	local = local.normal()
	local.Epoch = 1
	key := l.Topology()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(encode(local)))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return Topology{}, fmt.Errorf("topology: create %s: %w", key, err)
	}
	if resp.Succeeded {
		return local, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return Topology{}, fmt.Errorf("topology: %s vanished while read", key)
	}
	stored, err := decode(kvs[0].Value)
	if err != nil {
		return Topology{}, err
	}
	if reason := local.Diff(stored); reason != "" {
		local.Epoch = 0
		return stored, &MismatchError{Local: local, Stored: stored, Reason: reason}
	}
	return stored, nil
}

// Set replaces the namespace's topology with next (its Epoch is ignored),
// with the epoch after the stored one (1 on a namespace without one), and
// returns what it wrote. It writes only if the topology has not changed
// since it read it (ErrChanged otherwise). Checking that the servers answer
// is the caller's (see Probe).
func Set(ctx context.Context, cli *clientv3.Client, l keyspace.Layout, next Topology) (Topology, error) {
	if err := next.Validate(); err != nil {
		return Topology{}, err
	}
	next = next.normal()
	cur, rev, err := get(ctx, cli, l)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Topology{}, err
	}
	next.Epoch = cur.Epoch + 1
	key := l.Topology()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(encode(next)))).
		Commit()
	if err != nil {
		return Topology{}, fmt.Errorf("topology: write %s: %w", key, err)
	}
	if !resp.Succeeded {
		return Topology{}, ErrChanged
	}
	return next, nil
}
