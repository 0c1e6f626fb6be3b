package checker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Token is the token of an accepted batch: the etcd revision of the
// transaction that accepted it and the batch's index in that transaction
// (group commit stores several batches in one transaction; a batch stored
// alone has index zero). Tokens order by revision, then index.
//
// In JSON a token is the string "REV" or "REV.INDEX", the form the
// coordinator prints and stores as its watermark. A bare number (a
// revision) is read as a token with index zero.
type Token struct {
	Revision int64
	Index    uint32
}

// Rev returns the token of a batch stored alone at revision rev.
func Rev(rev int64) Token { return Token{Revision: rev} }

// Less reports whether t orders before u.
func (t Token) Less(u Token) bool {
	if t.Revision != u.Revision {
		return t.Revision < u.Revision
	}
	return t.Index < u.Index
}

// IsZero reports whether t is the zero token (no token).
func (t Token) IsZero() bool { return t == Token{} }

// String formats t as "REV" or "REV.INDEX".
func (t Token) String() string {
	if t.Index == 0 {
		return strconv.FormatInt(t.Revision, 10)
	}
	return strconv.FormatInt(t.Revision, 10) + "." + strconv.FormatUint(uint64(t.Index), 10)
}

// ParseToken parses the form String produces.
func ParseToken(s string) (Token, error) {
	revPart, idxPart, hasIdx := strings.Cut(s, ".")
	rev, err := strconv.ParseInt(revPart, 10, 64)
	if err != nil || rev < 0 {
		return Token{}, fmt.Errorf("checker: malformed token %q", s)
	}
	t := Token{Revision: rev}
	if hasIdx {
		idx, err := strconv.ParseUint(idxPart, 10, 32)
		if err != nil {
			return Token{}, fmt.Errorf("checker: malformed token %q", s)
		}
		t.Index = uint32(idx)
	}
	return t, nil
}

// MarshalJSON writes t as a string.
func (t Token) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON reads a token string, or a bare revision.
func (t *Token) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] != '"' {
		var rev int64
		if err := json.Unmarshal(b, &rev); err != nil {
			return fmt.Errorf("checker: token %s: %w", b, err)
		}
		*t = Token{Revision: rev}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseToken(s)
	if err != nil {
		return err
	}
	*t = v
	return nil
}
