package checker

import (
	"fmt"
	"math"
)

// The rules of this file check where each value read or left in the final
// state comes from, and the final state as a whole.

// checkHistoryValues checks that no value is written by two operations:
// a value read back must name the operation that wrote it.
func (c *checker) checkHistoryValues() {
	last := map[string]*opRef{}
	for _, ref := range c.ops {
		if ref.op.Kind != KindSet {
			continue
		}
		if prev, dup := last[ref.op.Value]; dup {
			c.violate(RuleHistory, ref.op.Key, "dup|"+ref.op.Value,
				"value %q is written by both %s and %s", ref.op.Value, prev, ref)
		}
		last[ref.op.Value] = ref
	}
}

// checkG1RefusedApplied checks that no refused (or never accepted)
// operation was applied: etcd holds no refused batch, and no reader or
// final item holds a refused operation's value (G1, G3).
func (c *checker) checkG1RefusedApplied() {
	for _, call := range c.h.Calls {
		if call.Result != Refused {
			continue
		}
		if a, inEtcd := c.stored[call.ID]; inEtcd {
			c.violate(RuleRefusedApplied, "", "etcd|"+call.ID,
				"batch %s of %s/%d was refused (%s) but etcd accepted it with token %s",
				call.ID, call.Name, call.Incarnation, call.Err, a.Token)
		}
	}
	for _, r := range c.h.Reads {
		if !r.Found {
			continue
		}
		if ref := c.byValue[r.Value]; ref != nil && ref.op.Key == r.Key && ref.accepted == notAccepted {
			c.violate(RuleRefusedApplied, r.Key, "value|"+r.Value,
				"reader %s saw the value of %s, which was not accepted (%s)", r.Reader, ref, ref.call.Err)
		}
	}
	for _, k := range c.allKeys() {
		item := c.h.Final.Memcached[k]
		if !item.Found {
			continue
		}
		if held := c.byValue[item.Value]; held != nil && held.op.Key == k && held.accepted == notAccepted {
			c.violate(RuleRefusedApplied, k, "final",
				"final value is that of %s, which was not accepted (%s)", held, held.call.Err)
		}
	}
}

// checkG1Phantom checks that every batch etcd holds was submitted, and
// that every value read or left in the final state was written by an
// operation of that key, read no earlier than its submission started (G1).
func (c *checker) checkG1Phantom() {
	for _, a := range c.h.Final.Accepted {
		if !c.submitted[a.ID] {
			c.violate(RulePhantom, "", "batch|"+a.ID,
				"etcd accepted batch %s of %s/%d with token %s that no caller submitted",
				a.ID, a.Name, a.Incarnation, a.Token)
		}
	}
	for _, r := range c.h.Reads {
		if !r.Found {
			continue
		}
		ref := c.byValue[r.Value]
		switch {
		case ref == nil:
			c.violate(RulePhantom, r.Key, "value|"+r.Value, "reader %s saw value %q that no operation wrote", r.Reader, r.Value)
		case ref.op.Key != r.Key:
			c.violate(RulePhantom, r.Key, "value|"+r.Value,
				"reader %s saw value %q written by %s on key %s", r.Reader, r.Value, ref, ref.op.Key)
		case ref.accepted == notAccepted:
			// checkG1RefusedApplied's.
		case r.End < ref.call.Start:
			c.violate(RulePhantom, r.Key, "early|"+r.Value,
				"reader %s saw %s at %s, before it was submitted at %s", r.Reader, ref, ms(r.End), ms(ref.call.Start))
		}
	}
	for _, k := range c.allKeys() {
		item := c.h.Final.Memcached[k]
		if !item.Found {
			continue
		}
		switch held := c.byValue[item.Value]; {
		case held == nil:
			c.violate(RulePhantom, k, "final", "final value %q was written by no operation", item.Value)
		case held.op.Key != k:
			c.violate(RulePhantom, k, "final",
				"final value %q was written by %s on key %s", item.Value, held, held.op.Key)
		}
	}
}

// checkG3FinalState checks that every key holds the token-ordered replay of
// the accepted operations, allowing for the possibly accepted ones and for
// a memcached restart (G3). A final value the other rules of this file
// flag is not checked again.
func (c *checker) checkG3FinalState() {
	f := &c.h.Final
	for _, k := range c.allKeys() {
		item := f.Memcached[k]
		var held *opRef
		if item.Found {
			held = c.byValue[item.Value]
			if held == nil || held.op.Key != k || held.accepted == notAccepted {
				continue
			}
		}
		refs := c.byKey[k]
		var want *opRef
		if len(refs) > 0 {
			want = refs[len(refs)-1]
		}
		if matches(want, item) {
			continue
		}
		alt := false
		for _, m := range c.maybe[k] {
			if matches(m, item) {
				alt = true
			}
		}
		if alt {
			continue
		}
		if !item.Found && want != nil && c.wiped(k, want.call.Start, math.MaxInt64) {
			c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("key %s: final %s was lost when memcached restarted", k, want))
			continue
		}
		got := "absent"
		if item.Found {
			got = held.String()
		}
		wantS := "absent (no accepted operation)"
		if want != nil {
			wantS = want.String()
		}
		c.violate(RuleFinal, k, "final", "final state is %s, the replay of the accepted operations gives %s", got, wantS)
	}
}

// matches reports whether item is what applying ref last leaves.
func matches(ref *opRef, item Item) bool {
	if ref == nil || ref.op.Kind == KindDelete {
		return !item.Found
	}
	return item.Found && item.Value == ref.op.Value
}
