// Package keyspace is the layout of the coordinator's keys in etcd. Every
// key lives under one namespace prefix, so several deployments can share an
// etcd cluster:
//
//	<root>/<namespace>/reg/<name>                  registration, under the caller's lease
//	<root>/<namespace>/ops/<name>/<inc>/<id>       a pending batch (no lease: it outlives the caller)
//	<root>/<namespace>/ops.takeover                the mark a new leader writes when it takes over
//	<root>/<namespace>/applied                     the applied watermark
//	<root>/<namespace>/term                        leadership term counter (its version is the term)
//	<root>/<namespace>/election/                   etcd concurrency election
//	<root>/<namespace>/quarantine/<rev>.<idx>-<h>  records set aside as undecodable or unappliable
//	<root>/<namespace>/receipts/<name>/<inc>/<id>  a submission's receipt, under the caller's lease
//	<root>/<namespace>/topology                    the memcached servers, distribution and epoch (JSON; see pkg/topology)
//	<root>/<namespace>/topology.applied            the topology the leaders write with, and a change to another under way (JSON)
//	<root>/<namespace>/memcached/values/<key>      the latest value the leader wrote to a memcached key, with --restore-on-restart (JSON; see pkg/restore)
//	<root>/<namespace>/memcached/restarts          the count of memcached restarts the leaders saw, and the latest ones (JSON; see pkg/topology)
//
// The incarnation is zero-padded so that a name's batches sort by incarnation.
//
// A receipt is written in the same transaction as the batch it records, under
// the lease of the submitting incarnation, so it outlives the batch (which the
// leader deletes once applied) but not the incarnation. It lets a caller whose
// reply was lost find out whether the batch was accepted; see
// tokenseq.Submitter.Lookup. Receipts are optional and cost one small key per
// submission while they exist.
package keyspace

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"unicode"
)

// Root is the prefix under which every namespace lives.
const Root = "/coordinator/"

// DefaultNamespace is the namespace used when none is given.
const DefaultNamespace = "default"

// MaxNameBytes bounds registration names and namespaces.
const MaxNameBytes = 128

// Errors returned by name validation; each also wraps ErrInvalidName.
var (
	ErrInvalidName = errors.New("invalid name")
	ErrNameEmpty   = errors.New("name is empty")
	ErrNameTooLong = errors.New("name is longer than 128 bytes")
	ErrNameBadChar = errors.New("name holds '/', whitespace or a control character")
)

// ErrNotBatchKey is returned by ParseBatch for a key that is not a batch key
// of the layout.
var ErrNotBatchKey = errors.New("keyspace: not a batch key")

// ValidateName checks a registration name or namespace.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: %w", ErrInvalidName, ErrNameEmpty)
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("%w: %w (%d bytes)", ErrInvalidName, ErrNameTooLong, len(name))
	}
	for _, r := range name {
		if r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("%w: %w: %q", ErrInvalidName, ErrNameBadChar, name)
		}
	}
	return nil
}

// Layout builds the keys of one namespace.
type Layout struct {
	prefix string
}

// New returns the layout of namespace ns; it validates ns.
func New(ns string) (Layout, error) {
	if err := ValidateName(ns); err != nil {
		return Layout{}, fmt.Errorf("namespace: %w", err)
	}
	return Layout{prefix: Root + ns + "/"}, nil
}

// MustNew is New for namespaces known to be valid; it panics otherwise.
func MustNew(ns string) Layout {
	l, err := New(ns)
	if err != nil {
		panic(err)
	}
	return l
}

// Prefix is the namespace's prefix.
func (l Layout) Prefix() string { return l.prefix }

// RegPrefix is the prefix of all registrations.
func (l Layout) RegPrefix() string { return l.prefix + "reg/" }

// Reg is the registration key of name.
func (l Layout) Reg(name string) string { return l.RegPrefix() + name }

// NameFromReg returns the name of a registration key.
func (l Layout) NameFromReg(key string) string { return strings.TrimPrefix(key, l.RegPrefix()) }

// OpsPrefix is the prefix of all pending batches.
func (l Layout) OpsPrefix() string { return l.prefix + "ops/" }

// NameOpsPrefix is the prefix of every pending batch of name.
func (l Layout) NameOpsPrefix(name string) string { return l.OpsPrefix() + name + "/" }

// IncarnationOpsPrefix is the prefix of the pending batches of one incarnation.
func (l Layout) IncarnationOpsPrefix(name string, inc int64) string {
	return l.NameOpsPrefix(name) + padRev(inc) + "/"
}

// Batch is the key of one pending batch.
func (l Layout) Batch(name string, inc int64, id string) string {
	return l.IncarnationOpsPrefix(name, inc) + id
}

// BatchKey is a parsed batch key.
type BatchKey struct {
	Name        string
	Incarnation int64
	ID          string
}

// ParseBatch parses a key under OpsPrefix.
func (l Layout) ParseBatch(key string) (BatchKey, error) {
	rest, ok := strings.CutPrefix(key, l.OpsPrefix())
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return BatchKey{}, fmt.Errorf("%w: %q", ErrNotBatchKey, key)
	}
	inc, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return BatchKey{}, fmt.Errorf("%w: %q: %w", ErrNotBatchKey, key, err)
	}
	return BatchKey{Name: parts[0], Incarnation: inc, ID: parts[2]}, nil
}

// TakeoverMark is the key a new leader writes when it takes over. It sorts
// right before OpsPrefix and outside it (so it is never taken for a batch
// nor counted as one), and a watch from TakeoverMark to OpsEnd sees it
// among the batches: once the mark written at takeover has been seen, every
// batch accepted before the takeover has been seen too.
func (l Layout) TakeoverMark() string { return l.prefix + "ops.takeover" }

// OpsEnd is the end of the range of pending batches.
func (l Layout) OpsEnd() string { return PrefixEnd(l.OpsPrefix()) }

// ReceiptsPrefix is the prefix of all submission receipts.
func (l Layout) ReceiptsPrefix() string { return l.prefix + "receipts/" }

// NameReceiptsPrefix is the prefix of every receipt of name.
func (l Layout) NameReceiptsPrefix(name string) string { return l.ReceiptsPrefix() + name + "/" }

// IncarnationReceiptsPrefix is the prefix of the receipts of one incarnation.
func (l Layout) IncarnationReceiptsPrefix(name string, inc int64) string {
	return l.NameReceiptsPrefix(name) + padRev(inc) + "/"
}

// Receipt is the key of the receipt of batch id of incarnation inc of name.
func (l Layout) Receipt(name string, inc int64, id string) string {
	return l.IncarnationReceiptsPrefix(name, inc) + id
}

// Applied is the key of the applied watermark.
func (l Layout) Applied() string { return l.prefix + "applied" }

// Topology is the key of the namespace's memcached topology: its servers,
// their distribution and its epoch, as pkg/topology stores them.
func (l Layout) Topology() string { return l.prefix + "topology" }

// MemcachedValuesPrefix is the prefix of the values kept for restoring a
// restarted memcached server (see package restore).
func (l Layout) MemcachedValuesPrefix() string { return l.prefix + "memcached/values/" }

// MemcachedValue is the key of the value kept of memcached key key.
func (l Layout) MemcachedValue(key string) string { return l.MemcachedValuesPrefix() + key }

// TopologyApplied is the key of the topology the leaders write with and of
// the change of topology under way (see topology.Applied); it sorts right
// after Topology.
func (l Layout) TopologyApplied() string { return l.prefix + "topology.applied" }

// MemcachedRestarts is the key of the record of memcached servers the
// leaders found restarted: how many, and the latest ones (see
// topology.RecordRestarts).
func (l Layout) MemcachedRestarts() string { return l.prefix + "memcached/restarts" }

// Term is the key whose version is the leadership term.
func (l Layout) Term() string { return l.prefix + "term" }

// Election is the prefix of the leader election, as etcd's concurrency
// package takes it (it appends the "/" itself).
func (l Layout) Election() string { return l.prefix + "election" }

// QuarantinePrefix is the prefix of records set aside.
func (l Layout) QuarantinePrefix() string { return l.prefix + "quarantine/" }

// Quarantine is the key under which the record stored at etcd key recKey,
// with token (rev, index), is set aside. Keys sort by token; a hash of the
// record's key keeps two records of one transaction apart even when neither
// could be read far enough to tell its index.
func (l Layout) Quarantine(rev int64, index uint32, recKey string) string {
	h := fnv.New32a()
	h.Write([]byte(recKey))
	return fmt.Sprintf("%s%s.%010d-%08x", l.QuarantinePrefix(), padRev(rev), index, h.Sum32())
}

func padRev(rev int64) string { return fmt.Sprintf("%020d", rev) }

// PrefixEnd returns the end of the range of keys starting with prefix.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}
