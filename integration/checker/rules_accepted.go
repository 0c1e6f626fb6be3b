package checker

import (
	"fmt"
	"sort"
)

// The rules of this file check what etcd accepted, under which tokens, and
// what the final watermark covers.

// checkG1Fence checks every accepted batch against the registration history:
// its incarnation must be the current registration at its revision (G1).
func (c *checker) checkG1Fence() {
	if !c.h.Final.EtcdHistory {
		return
	}
	for _, a := range c.h.Final.Accepted {
		evs := c.regs[a.Name]
		// Registrations change in transactions of their own, so the
		// registration current at the batch's revision is the last one
		// before it; the index plays no part.
		i := sort.Search(len(evs), func(i int) bool { return evs[i].Rev >= a.Token.Revision })
		switch {
		case i == 0:
			c.violate(RuleFence, "", "fence|"+a.ID,
				"batch %s of %s/%d accepted with token %s before any registration of the name",
				a.ID, a.Name, a.Incarnation, a.Token)
		case evs[i-1].Deleted:
			c.violate(RuleFence, "", "fence|"+a.ID,
				"batch %s of %s/%d accepted with token %s after the registration ended at %d",
				a.ID, a.Name, a.Incarnation, a.Token, evs[i-1].Rev)
		case evs[i-1].Rev != a.Incarnation:
			c.violate(RuleFence, "", "fence|"+a.ID,
				"batch %s of %s/%d accepted with token %s while incarnation %d was current",
				a.ID, a.Name, a.Incarnation, a.Token, evs[i-1].Rev)
		}
	}
}

// tokenOf is a batch and the token it was given.
type tokenOf struct {
	tok  Token
	id   string
	name string
	inc  int64
}

// checkG2Token checks that no two batches share a token, among the batches
// etcd stored and among the acknowledged tokens (G2).
func (c *checker) checkG2Token() {
	var stored, acked []tokenOf
	for _, a := range c.h.Final.Accepted {
		stored = append(stored, tokenOf{a.Token, a.ID, a.Name, a.Incarnation})
	}
	for _, call := range c.h.Calls {
		if call.Result == OK {
			acked = append(acked, tokenOf{call.Token, call.ID, call.Name, call.Incarnation})
		}
	}
	unique := func(what string, toks []tokenOf) {
		first := map[Token]tokenOf{}
		for _, t := range toks {
			if f, dup := first[t.tok]; dup && f.id != t.id {
				c.violate(RuleToken, "", what+"|"+t.id, "%s batch %s of %s/%d and batch %s of %s/%d with the same token %s",
					what, f.id, f.name, f.inc, t.id, t.name, t.inc, t.tok)
				continue
			}
			first[t.tok] = t
		}
	}
	unique("etcd stored", stored)
	unique("callers were acknowledged for", acked)
}

// checkG3Lost checks that every acknowledged batch is in etcd with its
// token and under the final watermark, unless its incarnation was
// superseded (that is checkG4OldFirst's), and that nothing is pending at
// the end (G3).
func (c *checker) checkG3Lost() {
	f := &c.h.Final
	if f.EtcdHistory {
		for _, call := range c.h.Calls {
			if call.Result != OK {
				continue
			}
			a, inEtcd := c.stored[call.ID]
			switch {
			case !inEtcd:
				c.violate(RuleLost, "", "notinetcd|"+call.ID,
					"batch %s of %s/%d was acknowledged with token %s but etcd never stored it",
					call.ID, call.Name, call.Incarnation, call.Token)
			case a.Token != call.Token:
				c.violate(RuleLost, "", "token|"+call.ID,
					"batch %s was acknowledged with token %s but etcd stored it with token %s",
					call.ID, call.Token, a.Token)
			}
		}
	}
	if f.Pending > 0 {
		c.violate(RuleLost, "", "pending",
			"%d batches are still pending after the leader was given time to drain", f.Pending)
	}
	c.aboveWatermark(func(ref *opRef) {
		if !c.superseded(ref) {
			c.violate(RuleLost, ref.op.Key, "wm|"+ref.call.ID, "%s is above the final watermark %s", ref, f.Watermark)
		}
	})
}

// checkG4OldFirst checks that every accepted operation of a superseded or
// ended incarnation is under the final watermark (G4).
func (c *checker) checkG4OldFirst() {
	c.aboveWatermark(func(ref *opRef) {
		if c.superseded(ref) {
			c.violate(RuleOldFirst, ref.op.Key, "wm|"+ref.call.ID,
				"%s is above the final watermark %s", ref, c.h.Final.Watermark)
		}
	})
}

// aboveWatermark calls fn with every accepted operation the final
// watermark does not cover.
func (c *checker) aboveWatermark(fn func(ref *opRef)) {
	wm := c.h.Final.Watermark
	for _, refs := range c.byKey {
		for _, ref := range refs {
			// A watermark R.2 covers R.1 and R.2, not R.3.
			if wm.Less(ref.pos.tok) {
				fn(ref)
			}
		}
	}
}

// checkG8Watermark checks that the watermark written to etcd never went
// back (G8).
func (c *checker) checkG8Watermark() {
	ws := c.h.Final.Watermarks
	for i := 1; i < len(ws); i++ {
		if ws[i].Less(ws[i-1]) {
			c.violate(RuleWatermark, "", fmt.Sprint(i), "the applied watermark went back from %s to %s", ws[i-1], ws[i])
		}
	}
}
