package keyspace

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

func TestValidateName(t *testing.T) {
	for _, bad := range []struct {
		name string
		want error
	}{
		{"", ErrNameEmpty},
		{strings.Repeat("n", 129), ErrNameTooLong},
		{"a/b", ErrNameBadChar},
		{"a b", ErrNameBadChar},
		{"a\tb", ErrNameBadChar},
		{"a\u00a0b", ErrNameBadChar},
		{"a\x00b", ErrNameBadChar},
		{"a\xffb", ErrNameBadChar},
		{"a\x7fb", ErrNameBadChar},    // DEL (Cc)
		{"a\u0085b", ErrNameBadChar},  // NEL (Cc)
		{"a\u3000b", ErrNameBadChar},  // ideographic space (Zs)
		{"a\ufffdb", ErrNameBadChar},  // replacement character
		{"se\u200bc", ErrNameBadChar}, // zero-width space (Cf)
		{"a\u200cb", ErrNameBadChar},  // zero-width non-joiner (Cf)
		{"a\u200db", ErrNameBadChar},  // zero-width joiner (Cf)
		{"a\u200eb", ErrNameBadChar},  // left-to-right mark (Cf)
		{"abc\u202edef", ErrNameBadChar},
		{"a\u202ab", ErrNameBadChar},       // left-to-right embedding (Cf)
		{"a\u2066b\u2069", ErrNameBadChar}, // isolates (Cf)
		{"\ufeffagent", ErrNameBadChar},    // byte order mark (Cf)
		{"a\u00adb", ErrNameBadChar},       // soft hyphen (Cf)
		{"a\u2060b", ErrNameBadChar},       // word joiner (Cf)
		{"a\U000e0041b", ErrNameBadChar},   // tag character (Cf)
		{"a\u2028b", ErrNameBadChar},       // line separator (Zl)
		{"a\u2029b", ErrNameBadChar},       // paragraph separator (Zp)
		{"a\ufe0fb", ErrNameBadChar},       // variation selector
		{"a\u034fb", ErrNameBadChar},       // combining grapheme joiner
		{"a\u3164b", ErrNameBadChar},       // Hangul filler
		{"a\ue000b", ErrNameBadChar},       // private use (Co)
		{"a\U0010fffdb", ErrNameBadChar},   // private use (Co)
		{"a\U000effffb", ErrNameBadChar},   // unassigned (Cn)
		{"\u0301agent", ErrNameBadChar},    // a leading combining mark
		{"\u2764\ufe0f", ErrNameBadChar},
		{"\U0001f469\u200d\U0001f4bb", ErrNameBadChar},
	} {
		err := ValidateName(bad.name)
		if !errors.Is(err, bad.want) || !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%+q) = %v, want %v", bad.name, err, bad.want)
		}
	}
	for _, good := range []string{
		"a", "agent-7", "svc.eu_1", strings.Repeat("n", 128), "名前", "агент-7", "δ", "وكيل", "עברית",
		"user@host:8080", "a*b", "*", "~x+y=z", "café", "cafe\u0301", "agent\U0001f600", "नमस्ते", "한국어",
		"18edc1cfb6fe1cc82741f4c469d73b31",
	} {
		if err := ValidateName(good); err != nil {
			t.Errorf("ValidateName(%+q) = %v", good, err)
		}
	}
}

// A refused name's error names the character and where it is, and shows the
// name with its invisible characters escaped.
func TestValidateNameErrorShowsTheCharacter(t *testing.T) {
	err := ValidateName("se\u200bc")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"U+200B", "at byte 2", `"se\u200bc"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %s", err, want)
		}
	}
	if strings.ContainsRune(err.Error(), '\u200b') {
		t.Errorf("%q holds the invisible character", err)
	}
	if err := ValidateName("a\xffb"); err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

// Every character the rule lets through is graphic, and none is a space,
// a slash or a format character; a sweep of the whole code space guards
// the rule against a Unicode version with new categories.
func TestNameRunesAreVisible(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !nameRune(r) {
			continue
		}
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs) || r == '/' {
			t.Fatalf("%U is a name character", r)
		}
	}
}

func TestBatchKeyRoundTrip(t *testing.T) {
	l := MustNew("ns")
	key := l.Batch("agent", 1234, "id1")
	if !strings.HasPrefix(key, l.IncarnationOpsPrefix("agent", 1234)) || !strings.HasPrefix(key, l.NameOpsPrefix("agent")) {
		t.Fatalf("key %q not under its prefixes", key)
	}
	bk, err := l.ParseBatch(key)
	if err != nil || bk != (BatchKey{Name: "agent", Incarnation: 1234, ID: "id1"}) {
		t.Fatalf("ParseBatch = %+v, %v", bk, err)
	}
	// Incarnations sort numerically as keys.
	if !(l.IncarnationOpsPrefix("a", 99) < l.IncarnationOpsPrefix("a", 100)) {
		t.Fatal("incarnation prefixes do not sort by incarnation")
	}
	for _, bad := range []string{"/coordinator/ns/ops/agent", "/coordinator/ns/ops/a/x/id", "/other/ops/a/1/id"} {
		if _, err := l.ParseBatch(bad); !errors.Is(err, ErrNotBatchKey) {
			t.Errorf("ParseBatch(%q) = %v, want ErrNotBatchKey", bad, err)
		}
	}
}

func TestNamespacesDoNotOverlap(t *testing.T) {
	a, b := MustNew("a"), MustNew("ab")
	if strings.HasPrefix(b.Prefix(), a.Prefix()) {
		t.Fatalf("%q is under %q", b.Prefix(), a.Prefix())
	}
	if _, err := New("a/b"); err == nil {
		t.Fatal("namespace with / accepted")
	}
	if got := PrefixEnd("/x/"); got != "/x0" {
		t.Fatalf("PrefixEnd = %q", got)
	}
}

func TestTopologyKeyIsOutsideEveryRange(t *testing.T) {
	l := MustNew("ns")
	k := l.Topology()
	if k != "/coordinator/ns/topology" {
		t.Fatalf("Topology() = %q", k)
	}
	for _, p := range []string{l.RegPrefix(), l.OpsPrefix(), l.ReceiptsPrefix(), l.QuarantinePrefix(), l.Election() + "/"} {
		if strings.HasPrefix(k, p) {
			t.Fatalf("%q is under %q", k, p)
		}
	}
	if k >= l.TakeoverMark() && k < l.OpsEnd() {
		t.Fatalf("%q is inside the watched range of batches", k)
	}
}

// The keys of the applied topology, the restart record and the kept
// values lie outside every other range, and outside the watched range of
// batches.
func TestMemcachedKeysAreOutsideEveryRange(t *testing.T) {
	l := MustNew("ns")
	want := map[string]string{
		l.TopologyApplied():       "/coordinator/ns/topology.applied",
		l.MemcachedRestarts():     "/coordinator/ns/memcached/restarts",
		l.MemcachedValue("a/b c"): "/coordinator/ns/memcached/values/a/b c",
	}
	for k, w := range want {
		if k != w {
			t.Fatalf("key %q, want %q", k, w)
		}
		for _, p := range []string{l.RegPrefix(), l.OpsPrefix(), l.ReceiptsPrefix(), l.QuarantinePrefix(), l.Election() + "/"} {
			if strings.HasPrefix(k, p) {
				t.Fatalf("%q is under %q", k, p)
			}
		}
		if k >= l.TakeoverMark() && k < l.OpsEnd() {
			t.Fatalf("%q is inside the watched range of batches", k)
		}
	}
	if strings.HasPrefix(l.MemcachedRestarts(), l.MemcachedValuesPrefix()) {
		t.Fatal("the restart record is under the kept values")
	}
}
