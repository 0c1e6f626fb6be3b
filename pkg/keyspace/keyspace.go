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
//
// # Names
//
// Registration names, namespaces, batch ids and node ids follow one rule,
// ValidateName's, because each becomes a segment of an etcd key and is shown
// to operators in tables, logs and errors: a name must look like what it is.
// A name is 1 to MaxNameBytes bytes of UTF-8 whose every character is
// graphic (a letter, mark, number, punctuation or symbol of any script), so
// "agent-7", "svc.eu_1", "user@host:8080", "名前" and "агент" are names. It
// may not hold:
//
//   - '/', which separates the segments of a key;
//   - whitespace of any kind (space, tab, no-break space, the line and
//     paragraph separators U+2028 and U+2029);
//   - control characters (category Cc: NUL, ESC, DEL, C1 controls);
//   - format characters (category Cf), which are invisible or reorder what
//     follows: the zero-width space, joiner and non-joiner (U+200B to
//     U+200D), the bidirectional embeddings, overrides and isolates (U+202A
//     to U+202E, U+2066 to U+2069), the byte order mark U+FEFF, the soft
//     hyphen U+00AD;
//   - other characters that display as nothing: variation selectors, the
//     combining grapheme joiner U+034F, the Hangul fillers (Unicode's
//     default-ignorable code points);
//   - private-use and unassigned code points (in the Unicode version of the
//     Go release that built the binary, unicode.Version), and invalid UTF-8
//     or U+FFFD, which display as boxes or not at all;
//   - a combining mark as its first character, which would attach to
//     whatever is printed before the name.
//
// So "se\u200bc" and "abc\u202edef", which display as "sec" and "abcfed",
// are refused, and so are emoji written with a joiner or a variation
// selector; emoji of one code point are names. Names are compared byte for
// byte: the rule refuses what cannot be seen, not what looks alike, so "é" as
// one code point and as "e" with a combining acute are two names, as are
// letters of different scripts that look the same.
package keyspace

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
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
	ErrNameBadChar = errors.New("name holds '/', whitespace, a control or format character, or a character that displays as nothing")
)

// ErrNotBatchKey is returned by ParseBatch for a key that is not a batch key
// of the layout.
var ErrNotBatchKey = errors.New("keyspace: not a batch key")

// ValidateName checks a registration name, namespace, batch id or node id
// against the rule of the package documentation (see Names). A refused name
// is ErrInvalidName with ErrNameEmpty, ErrNameTooLong or ErrNameBadChar;
// the last names the first refused character and its byte offset, quoted
// so that an invisible one shows.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: %w", ErrInvalidName, ErrNameEmpty)
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("%w: %w (%d bytes)", ErrInvalidName, ErrNameTooLong, len(name))
	}
	for i, r := range name {
		if !nameRune(r) || (i == 0 && unicode.Is(unicode.M, r)) {
			what := fmt.Sprintf("%U", r)
			if r == utf8.RuneError {
				what = "invalid UTF-8 or " + what
			}
			return fmt.Errorf("%w: %w: %s at byte %d of %+q", ErrInvalidName, ErrNameBadChar, what, i, name)
		}
	}
	return nil
}

// nameRune reports whether r may appear in a name: a graphic character
// (which excludes categories Cc, Cf, Co, Cs, Cn, Zl and Zp) that is not
// whitespace, '/', U+FFFD, nor a default-ignorable code point, all of which
// display as nothing, as a box, or change how their neighbours display.
func nameRune(r rune) bool {
	switch {
	case r == '/' || r == utf8.RuneError:
		return false
	case r < utf8.RuneSelf:
		// ASCII: the printable characters but the space.
		return r > ' ' && r < 0x7f
	}
	return unicode.IsGraphic(r) && !unicode.IsSpace(r) &&
		!unicode.In(r, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
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
