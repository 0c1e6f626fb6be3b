package keyspace

import (
	"errors"
	"strings"
	"testing"
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
	} {
		err := ValidateName(bad.name)
		if !errors.Is(err, bad.want) || !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want %v", bad.name, err, bad.want)
		}
	}
	for _, good := range []string{"a", "agent-7", "svc.eu_1", strings.Repeat("n", 128), "名前"} {
		if err := ValidateName(good); err != nil {
			t.Errorf("ValidateName(%q) = %v", good, err)
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
