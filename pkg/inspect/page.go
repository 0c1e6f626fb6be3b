package inspect

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// Page sizes of the paged listings (RegistrationsPage, OpsPage). What a
// page reads grows with its size, not with the size of the whole listing
// (but for etcd's own walk of its key index, see RegistrationsPage).
const (
	// DefaultPageSize is the page size of a PageRequest whose Size is zero.
	DefaultPageSize = 500
	// MaxPageSize is the largest page; a larger Size is read as MaxPageSize.
	MaxPageSize = 1000
	// MaxPageBytes bounds the text a registrations page carries (names and
	// holder hosts, plus a fixed allowance per row for the other fields): a
	// page ends early, with a NextToken, once its rows reach it. A page
	// holds at least one row, so a single record larger than this (a
	// holder host written by something that does not bound it) still gets
	// listed, alone.
	MaxPageBytes = 1 << 20
)

// Errors of a PageRequest, each wrapped in the *config.FieldError that
// PageRequest.Validate or a listing returns.
var (
	// ErrBadPageSize is a negative PageRequest.Size.
	ErrBadPageSize = errors.New("inspect: page size is negative")
	// ErrBadPageToken is a PageRequest.Token that is not a NextToken of the
	// same listing: malformed, truncated, or from another listing.
	ErrBadPageToken = errors.New("inspect: bad page token")
)

// PageRequest asks for one page of a listing. The zero PageRequest asks for
// the first page of DefaultPageSize rows.
type PageRequest struct {
	// Size is the most rows the page holds; zero means DefaultPageSize and
	// anything over MaxPageSize means MaxPageSize. A page may hold fewer
	// rows than Size and still have a NextToken (see MaxPageBytes).
	Size int
	// Token is the NextToken of the previous page of the same listing;
	// empty means the first page. Tokens are opaque and hold a position,
	// not a snapshot: rows written or removed between two pages may be
	// missed or seen, every other row is listed exactly once.
	Token string
}

// Validate checks the request; its errors are *config.FieldError naming
// Size or Token, matching ErrBadPageSize or ErrBadPageToken.
func (r PageRequest) Validate() error {
	if r.Size < 0 {
		return &config.FieldError{Pkg: "inspect", Field: "Size", Rule: fmt.Sprintf("%d is negative", r.Size), Err: ErrBadPageSize}
	}
	if r.Token != "" {
		if _, err := decodeToken(r.Token); err != nil {
			return tokenError(err)
		}
	}
	return nil
}

// size returns the page size the request asks for.
func (r PageRequest) size() int {
	switch {
	case r.Size == 0:
		return DefaultPageSize
	case r.Size > MaxPageSize:
		return MaxPageSize
	}
	return r.Size
}

// tokenError is the FieldError of a bad token.
func tokenError(err error) error {
	return &config.FieldError{Pkg: "inspect", Field: "Token", Rule: err.Error(), Err: ErrBadPageToken}
}

// Page tokens are base64url (unpadded) of a version byte, the kind of the
// listing, and the position, so that a token of one listing or of a future
// format is refused rather than misread.
const (
	tokenVersion = 1
	// kindRegistrations: a registration name and incarnation (varint).
	kindRegistrations = 'r'
	// kindOps: a token's revision and index, and an operation's position
	// in its batch (uvarints).
	kindOps = 'o'
	// maxTokenLen bounds the tokens decoded: room for a name of ten times
	// keyspace.MaxNameBytes, which only a key written by something other
	// than the coordinator could hold.
	maxTokenLen = 2048
	// afterName, as a registrations position's incarnation, is past every
	// incarnation of the name.
	afterName = math.MaxInt64
)

// position is a decoded page token.
type position struct {
	kind byte
	// name and inc: the last registrations row listed (inc afterName: every
	// row of name was listed).
	name string
	inc  int64
	// rev, idx and op: the first pending operation not listed yet.
	rev int64
	idx uint32
	op  int
}

func (p position) encode() string {
	buf := []byte{tokenVersion, p.kind}
	switch p.kind {
	case kindRegistrations:
		buf = binary.AppendUvarint(buf, uint64(len(p.name)))
		buf = append(buf, p.name...)
		buf = binary.AppendVarint(buf, p.inc)
	case kindOps:
		buf = binary.AppendUvarint(buf, uint64(p.rev))
		buf = binary.AppendUvarint(buf, uint64(p.idx))
		buf = binary.AppendUvarint(buf, uint64(p.op))
	}
	return base64.RawURLEncoding.EncodeToString(buf)
}

var (
	errTokenSyntax = errors.New("not a page token")
	errTokenKind   = errors.New("a page token of another listing")
)

// decodeToken decodes a token of any listing; every error means the token
// is not one this package made.
func decodeToken(s string) (position, error) {
	if len(s) > maxTokenLen {
		return position{}, fmt.Errorf("%w (%d characters)", errTokenSyntax, len(s))
	}
	buf, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(buf) < 2 || buf[0] != tokenVersion {
		return position{}, errTokenSyntax
	}
	p := position{kind: buf[1]}
	rest := buf[2:]
	uvarint := func() uint64 {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			err = errTokenSyntax
			return 0
		}
		rest = rest[n:]
		return v
	}
	switch p.kind {
	case kindRegistrations:
		n := uvarint()
		if err != nil || n == 0 || n > uint64(len(rest)) {
			return position{}, errTokenSyntax
		}
		p.name, rest = string(rest[:n]), rest[n:]
		v, k := binary.Varint(rest)
		if k <= 0 || v < 0 || strings.Contains(p.name, "/") {
			return position{}, errTokenSyntax
		}
		p.inc, rest = v, rest[k:]
	case kindOps:
		rev, idx, op := uvarint(), uvarint(), uvarint()
		if err != nil || rev == 0 || rev > math.MaxInt64 || idx > math.MaxUint32 || op > math.MaxInt32 {
			return position{}, errTokenSyntax
		}
		p.rev, p.idx, p.op = int64(rev), uint32(idx), int(op)
	default:
		return position{}, errTokenSyntax
	}
	if len(rest) != 0 {
		return position{}, errTokenSyntax
	}
	return p, nil
}

// decodeTokenOf decodes the token of a listing of kind; the empty token is
// the zero position.
func decodeTokenOf(s string, kind byte) (position, error) {
	if s == "" {
		return position{}, nil
	}
	p, err := decodeToken(s)
	if err == nil && p.kind != kind {
		err = errTokenKind
	}
	if err != nil {
		return position{}, tokenError(err)
	}
	return p, nil
}

// fanOut is how many etcd reads a page has in flight at once (pending
// counts and lease lookups of its rows).
const fanOut = 16

// forEach calls fn(ctx, i) for i in [0, n), at most fanOut at a time, and
// returns the first error; the others' ctx is cancelled once one fails.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, fanOut)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fail := func(err error) {
		once.Do(func() { first = err; cancel() })
	}
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			fail(ctx.Err())
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	return first
}
