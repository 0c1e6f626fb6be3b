// Package tokenseq turns submissions into tokens. A submission is one etcd
// transaction that checks the caller's incarnation is still current and, in
// the same transaction, stores the batch durably (not under the caller's
// lease, so it outlives the caller). The transaction's revision is the
// batch's token: tokens are unique and grow with acceptance order across the
// whole cluster. The package also reads and waits on the applied watermark.
package tokenseq

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Token identifies an accepted submission: the etcd revision of the
// transaction that accepted it, and an index that orders submissions sharing
// one transaction. Tokens compare by revision, then index.
type Token struct {
	Revision int64
	Index    uint32
}

// Zero is the token before every token.
var Zero Token

// Less reports whether t orders before u.
func (t Token) Less(u Token) bool {
	if t.Revision != u.Revision {
		return t.Revision < u.Revision
	}
	return t.Index < u.Index
}

// Compare returns -1, 0 or +1 as t orders before, equal to or after u.
func (t Token) Compare(u Token) int {
	switch {
	case t.Less(u):
		return -1
	case u.Less(t):
		return 1
	}
	return 0
}

// Max returns the later of a and b.
func Max(a, b Token) Token {
	if a.Less(b) {
		return b
	}
	return a
}

// IsZero reports whether t is the zero token.
func (t Token) IsZero() bool { return t == Zero }

// String formats the token as "REVISION" or "REVISION.INDEX".
func (t Token) String() string {
	if t.Index == 0 {
		return strconv.FormatInt(t.Revision, 10)
	}
	return strconv.FormatInt(t.Revision, 10) + "." + strconv.FormatUint(uint64(t.Index), 10)
}

// MarshalText implements encoding.TextMarshaler.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Token) UnmarshalText(b []byte) error {
	v, err := ParseToken(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// ErrBadToken is returned by ParseToken for malformed input.
var ErrBadToken = errors.New("tokenseq: malformed token")

// ParseToken parses the form String produces.
func ParseToken(s string) (Token, error) {
	revPart, idxPart, hasIdx := strings.Cut(s, ".")
	rev, err := strconv.ParseInt(revPart, 10, 64)
	if err != nil || rev < 0 {
		return Zero, fmt.Errorf("%w: %q", ErrBadToken, s)
	}
	t := Token{Revision: rev}
	if hasIdx {
		idx, err := strconv.ParseUint(idxPart, 10, 32)
		if err != nil {
			return Zero, fmt.Errorf("%w: %q", ErrBadToken, s)
		}
		t.Index = uint32(idx)
	}
	return t, nil
}
