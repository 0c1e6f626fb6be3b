package memfence

import (
	"errors"
	"fmt"
)

// The item flags.
//
// An item the coordinator writes carries its writer's term in the high 16
// bits of memcached's 32-bit flags, and 0 in the low 16 bits:
//
//	flags = term << 16        term 1 is 65536, term 2 is 131072, ...
//
// Client libraries decode a value by the low bits of its flags, and every
// common one takes 0 there as "plain bytes or a string": pylibmc (bit 0
// pickle, 1 int, 2 long, 3 zlib, 4 bool, 5 text), pymemcache's pickle serde
// (0 bytes, bit 0 pickle, 1 int, 2 long, 3 compressed, 4 text; its default
// client ignores flags), php-memcached (bits 0-3 the value's type, 0 a
// string; 4-15 its compression; 16-31 the caller's own "user flags", where
// it shows the term), spymemcached's default transcoder (bit 0 serialized,
// bit 1 compressed, bits 8-15 a special type; none of them a String),
// Dalli (bit 0 serialized, bit 1 compressed) and gomemcache (which hands
// the flags to the caller). So each of them reads the value as written,
// with its default settings.
//
// The term's maximum is MaxTerm, 65535: a leader of a later term does not
// write (ErrTermExhausted). See topology.ResetTerm for the procedure that
// starts a namespace's terms again.
//
// Nodes before this layout stored the whole term as the flags (term 3 as
// flags 3). TermOf reads both: flags whose low 16 bits are not 0 are such
// an item's term. During a rolling upgrade a node of this version therefore
// compares terms, not flags, and stays fenced by an item a newer leader of
// the earlier version wrote; a node of the earlier version reads this
// layout's flags as a term far above its own and is fenced by every item
// this version wrote (it stops, which is safe), so finish an upgrade once
// it has begun.

const (
	// TermShift is where the term starts in an item's flags.
	TermShift = 16
	// MaxTerm is the highest term an item's flags hold.
	MaxTerm = 1<<(32-TermShift) - 1
	// lowMask selects the flags' low bits, 0 in this layout.
	lowMask = 1<<TermShift - 1
)

// ErrTermExhausted means a term beyond MaxTerm: no item can carry it, so
// nothing is written under it. topology.ResetTerm starts the namespace's
// terms again.
var ErrTermExhausted = errors.New("memfence: the leadership term is beyond the highest an item's flags hold (65535); stop every node and run `coordinator topology reset-term`")

// Flags returns the flags of an item written under term (term <= MaxTerm).
func Flags(term uint32) uint32 { return term << TermShift }

// TermOf returns the term an item's flags hold: the high 16 bits when the
// low 16 are 0 (this layout; 0 for an item written without flags), and
// the whole flags otherwise, which is how nodes before this layout stored
// the term.
func TermOf(flags uint32) uint32 {
	if flags&lowMask == 0 {
		return flags >> TermShift
	}
	return flags
}

// TermHeadroom returns how many more terms after term fit in an item's
// flags: MaxTerm - term, 0 beyond it.
func TermHeadroom(term uint64) uint64 {
	if term >= MaxTerm {
		return 0
	}
	return MaxTerm - term
}

// checkTerm returns ErrTermExhausted, wrapped, for a term beyond MaxTerm.
func checkTerm(term uint32) error {
	if term > MaxTerm {
		return fmt.Errorf("%w: term %d", ErrTermExhausted, term)
	}
	return nil
}
