// Package ops defines the operations callers submit (set and delete on a
// memcached key), the rules that reject bad input before anything is written,
// and the compact binary record a batch is stored as in etcd.
//
// Validation is the single gate for the contract's bad-input rules: keys that
// memcached would refuse, values whose item would exceed the configured item
// size, negative expirations, unknown operation kinds and unknown flags.
package ops

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Kind is the kind of an operation.
type Kind uint8

const (
	// KindSet stores a value under a key.
	KindSet Kind = 1
	// KindDelete removes a key.
	KindDelete Kind = 2
)

// String returns "set" or "delete".
func (k Kind) String() string {
	switch k {
	case KindSet:
		return "set"
	case KindDelete:
		return "delete"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind parses "set" or "delete".
func ParseKind(s string) (Kind, error) {
	switch s {
	case "set":
		return KindSet, nil
	case "delete":
		return KindDelete, nil
	}
	return 0, fmt.Errorf("%w: %q (want set or delete)", ErrUnknownKind, s)
}

// Op is one operation on memcached.
type Op struct {
	Kind Kind
	// Key is the memcached key.
	Key string
	// Value is the value to store (set only).
	Value []byte
	// Expiration is the item's time to live (set only); zero means no expiry.
	// It is rounded down to whole seconds, as memcached counts in seconds.
	Expiration time.Duration
	// Flags carries option bits; no flag is defined yet, so any set bit is
	// refused with ErrUnknownFlags. It is not the memcached item flags field,
	// which the coordinator uses for fencing.
	Flags uint32
}

// Set returns a set operation.
func Set(key string, value []byte, expiration time.Duration) Op {
	return Op{Kind: KindSet, Key: key, Value: value, Expiration: expiration}
}

// Delete returns a delete operation.
func Delete(key string) Op {
	return Op{Kind: KindDelete, Key: key}
}

// Errors returned by validation. Every error returned by Validate wraps
// ErrInvalid and one of the more specific errors below.
var (
	ErrInvalid        = errors.New("invalid input")
	ErrEmptyKey       = errors.New("ops: key is empty")
	ErrKeyTooLong     = errors.New("ops: key is longer than 250 bytes")
	ErrKeyBadChar     = errors.New("ops: key holds whitespace or a control character")
	ErrValueTooLarge  = errors.New("ops: value is over the maximum item size")
	ErrNegativeExpiry = errors.New("ops: expiration is negative")
	ErrExpiryTooLong  = errors.New("ops: expiration is too long")
	ErrUnknownKind    = errors.New("ops: unknown operation kind")
	ErrUnknownFlags   = errors.New("ops: unknown flags")
	ErrValueOnDelete  = errors.New("ops: delete carries a value or expiration")
	ErrEmptyBatch     = errors.New("ops: batch has no operations")
	ErrBatchTooLarge  = errors.New("ops: batch is over the maximum batch size")
)

// MaxKeyBytes is memcached's key length limit.
const MaxKeyBytes = 250

// DefaultMaxItemBytes is memcached's default item size limit (-I 1m).
const DefaultMaxItemBytes = 1 << 20

// ItemOverheadBytes is the room memcached needs in an item besides key and
// value (item header, CAS, suffix and terminator). A value is refused when
// key + value + ItemOverheadBytes exceeds the maximum item size, so that a
// value we accept is one memcached will store.
const ItemOverheadBytes = 64

// DefaultMaxBatchBytes bounds the encoded size of one batch so it fits in
// one etcd request under etcd's default --max-request-bytes (1.5 MiB).
const DefaultMaxBatchBytes = 1<<20 + 256<<10

// maxExpiration keeps expirations below memcached's 30-day boundary, past
// which memcached reads the number as an absolute Unix time.
const maxExpiration = 30 * 24 * time.Hour

// Limits are the size limits validation enforces. The zero value means the
// defaults.
type Limits struct {
	// MaxItemBytes is memcached's item size limit (-I); default 1 MiB.
	MaxItemBytes int
	// MaxBatchBytes is the largest encoded batch; default DefaultMaxBatchBytes.
	MaxBatchBytes int
}

func (l Limits) maxItem() int {
	if l.MaxItemBytes > 0 {
		return l.MaxItemBytes
	}
	return DefaultMaxItemBytes
}

func (l Limits) maxBatch() int {
	if l.MaxBatchBytes > 0 {
		return l.MaxBatchBytes
	}
	return DefaultMaxBatchBytes
}

// ValidateKey reports whether memcached would accept key.
func ValidateKey(key string) error {
	if key == "" {
		return invalid(ErrEmptyKey, "")
	}
	if len(key) > MaxKeyBytes {
		return invalid(ErrKeyTooLong, fmt.Sprintf("%d bytes", len(key)))
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= ' ' || c == 0x7f {
			return invalid(ErrKeyBadChar, fmt.Sprintf("%q at byte %d", c, i))
		}
	}
	if !utf8.ValidString(key) {
		// memcached accepts any byte, but a key that is not UTF-8 cannot be
		// shown or typed back; refuse it rather than store it.
		return invalid(ErrKeyBadChar, "not valid UTF-8")
	}
	return nil
}

// Validate checks one operation against the limits.
func (o Op) Validate(l Limits) error {
	if err := ValidateKey(o.Key); err != nil {
		return err
	}
	if o.Flags != 0 {
		return invalid(ErrUnknownFlags, fmt.Sprintf("%#x", o.Flags))
	}
	switch o.Kind {
	case KindSet:
		if o.Expiration < 0 {
			return invalid(ErrNegativeExpiry, o.Expiration.String())
		}
		if o.Expiration > maxExpiration {
			return invalid(ErrExpiryTooLong, fmt.Sprintf("%s is over 30 days", o.Expiration))
		}
		if n := len(o.Key) + len(o.Value) + ItemOverheadBytes; n > l.maxItem() {
			return invalid(ErrValueTooLarge,
				fmt.Sprintf("value of %d bytes with key makes an item of %d bytes, limit %d", len(o.Value), n, l.maxItem()))
		}
	case KindDelete:
		if len(o.Value) != 0 || o.Expiration != 0 {
			return invalid(ErrValueOnDelete, "")
		}
	default:
		return invalid(ErrUnknownKind, o.Kind.String())
	}
	return nil
}

// ValidateBatch checks every operation of a batch and the batch's size.
func ValidateBatch(batch []Op, l Limits) error {
	if len(batch) == 0 {
		return invalid(ErrEmptyBatch, "")
	}
	size := 0
	for i, o := range batch {
		if err := o.Validate(l); err != nil {
			if len(batch) == 1 {
				return err
			}
			return fmt.Errorf("operation %d: %w", i, err)
		}
		size += encodedOpSize(o)
	}
	if size > l.maxBatch() {
		return invalid(ErrBatchTooLarge, fmt.Sprintf("%d bytes, limit %d", size, l.maxBatch()))
	}
	return nil
}

// ExpirationSeconds is the expiration as memcached's exptime field.
func (o Op) ExpirationSeconds() int32 {
	return int32(o.Expiration / time.Second)
}

type validationError struct {
	specific error
	detail   string
}

func (e *validationError) Error() string {
	if e.detail == "" {
		return e.specific.Error()
	}
	return e.specific.Error() + ": " + e.detail
}

func (e *validationError) Unwrap() []error { return []error{e.specific, ErrInvalid} }

func invalid(specific error, detail string) error {
	return &validationError{specific: specific, detail: detail}
}
