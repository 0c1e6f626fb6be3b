package benchenv

import (
	"strings"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// TestScratchKeysSortAfterTheLayout checks that the baselines' keys sort
// after every key family of the coordinator's layout, and so outside every
// range a node watches.
func TestScratchKeysSortAfterTheLayout(t *testing.T) {
	layout := keyspace.MustNew("bench-test")
	e := &Env{Layout: layout}
	scratch := e.Scratch("")
	if !strings.HasPrefix(scratch, layout.Prefix()) {
		t.Fatalf("scratch %q is outside the namespace %q", scratch, layout.Prefix())
	}
	families := map[string]string{
		"registrations": keyspace.PrefixEnd(layout.RegPrefix()),
		"ops":           layout.OpsEnd(),
		"receipts":      keyspace.PrefixEnd(layout.ReceiptsPrefix()),
		"quarantine":    keyspace.PrefixEnd(layout.QuarantinePrefix()),
		"election":      keyspace.PrefixEnd(layout.Election()),
		"watermark":     layout.Applied() + "\x00",
		"term":          layout.Term() + "\x00",
		"takeover mark": layout.TakeoverMark() + "\x00",
	}
	for name, end := range families {
		if end > scratch {
			t.Errorf("the %s family ends at %q, after the scratch keys %q", name, end, scratch)
		}
	}
}
