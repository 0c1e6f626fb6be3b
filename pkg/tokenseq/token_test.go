package tokenseq

import (
	"errors"
	"testing"
)

func TestTokenOrderAndText(t *testing.T) {
	a, b, c := Token{Revision: 5}, Token{Revision: 5, Index: 2}, Token{Revision: 6}
	if !a.Less(b) || !b.Less(c) || c.Less(a) || a.Less(a) {
		t.Fatal("order wrong")
	}
	if Max(a, b) != b || Max(b, a) != b || Max(c, a) != c || Max(a, a) != a {
		t.Fatal("Max wrong")
	}
	for _, tok := range []Token{Zero, a, b, c} {
		got, err := ParseToken(tok.String())
		if err != nil || got != tok {
			t.Errorf("round trip %v: %v %v", tok, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1.", "1.x", "1.99999999999"} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("ParseToken(%q) = %v", bad, err)
		}
	}
}
