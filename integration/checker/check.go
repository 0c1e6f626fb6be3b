package checker

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Rules a violation breaks, named after the guarantee of CONTRACT.md.
const (
	// RulePhantom: a reader or the final state holds a value no operation of
	// the history wrote, a value on another key than it was written to, a
	// value seen before its submission started, or etcd holds a batch no
	// caller submitted.
	RulePhantom = "G1-phantom"
	// RuleRefusedApplied: a refused (or never accepted) operation was
	// applied: its value was seen, is in the final state, or etcd holds it.
	RuleRefusedApplied = "G1-refused-applied"
	// RuleFence: etcd accepted a batch whose incarnation was not the current
	// registration of its name at the batch's revision.
	RuleFence = "G1-fence"
	// RuleToken: two batches got the same token (revision and index), so
	// token order does not order them.
	RuleToken = "G2-token"
	// RuleOrder: after a reader saw operation B applied, some key showed a
	// value older than an operation of B's name ordered before B (G2: token
	// order across keys within a name and across its incarnations; batches
	// of one transaction in their index order). Different names' writes of
	// one round may land in either order; the watermark orders them (see
	// RuleApplied).
	RuleOrder = "G2-order"
	// RuleLost: an acknowledged operation is not in etcd with its token
	// (revision and index), is above the final watermark, or batches are
	// still pending at the end.
	RuleLost = "G3-lost"
	// RuleFinal: a key's final value is not the token-ordered replay of the
	// accepted operations.
	RuleFinal = "G3-final-state"
	// RuleOldFirst: an accepted operation of a superseded or expired
	// incarnation was never applied (G4).
	RuleOldFirst = "G4-old-first"
	// RuleStale: a reader saw a key's value older than one another reader
	// had already seen, or the key absent with no later delete (G5).
	RuleStale = "G5-stale"
	// RuleBack: a reader saw a key's value go back to an older token's, or
	// to absent with no later delete (G6).
	RuleBack = "G6-back"
	// RuleDrain: after a registration with WaitDrained returned, a key showed
	// a value older than an operation of an earlier incarnation (G7).
	RuleDrain = "G7-drain"
	// RuleApplied: after WaitApplied(t) returned, a key showed a value older
	// than an operation with a token up to t (G8).
	RuleApplied = "G8-applied"
	// RuleWatermark: the applied watermark written to etcd went back (in
	// token order: "R.3" to "R.1" is back).
	RuleWatermark = "G8-watermark"
	// RuleHistory: the history itself is malformed (a value used twice).
	RuleHistory = "history"
)

// Violation is one broken guarantee, with the evidence found first and the
// number of reads or items that showed the same breach.
type Violation struct {
	Rule  string `json:"rule"`
	Key   string `json:"key,omitempty"`
	Msg   string `json:"msg"`
	Count int    `json:"count"`
}

func (v Violation) String() string {
	s := v.Rule + ": "
	if v.Key != "" {
		s += "key " + v.Key + ": "
	}
	s += v.Msg
	if v.Count > 1 {
		s += fmt.Sprintf(" (seen %d times)", v.Count)
	}
	return s
}

// Stats counts what a history holds.
type Stats struct {
	Calls           int `json:"calls"`
	Ops             int `json:"ops"`
	OK              int `json:"ok"`
	Refused         int `json:"refused"`
	Unknown         int `json:"unknown"`
	UnknownAccepted int `json:"unknown_accepted"`
	Incarnations    int `json:"incarnations"`
	Reads           int `json:"reads"`
	Misses          int `json:"misses"`
	Applied         int `json:"applied"`
	Drains          int `json:"drains"`
	Faults          int `json:"faults"`
	Wipes           int `json:"wipes"`
	// Indexed counts the acknowledged submissions whose token has a
	// non-zero index: they shared a transaction with a batch before them.
	Indexed int `json:"indexed"`
	// SharedTxns counts the transactions that stored more than one batch,
	// and MaxGroup is the most batches one transaction stored (from etcd's
	// history when it was read, else from the acknowledged tokens).
	SharedTxns int `json:"shared_txns"`
	MaxGroup   int `json:"max_group"`
}

// Report is the result of Check.
type Report struct {
	Stats Stats `json:"stats"`
	// Violations are breaches of the guarantees.
	Violations []Violation `json:"violations"`
	// DeleteWindows are stale values that fit exactly the window package
	// memfence documents: a former leader's set of an older token landing
	// on a key a newer leader had deleted. They are reported apart from the
	// violations.
	DeleteWindows []Violation `json:"delete_windows"`
	// Notes are facts worth knowing that are not breaches (values lost
	// with a memcached restart).
	Notes []string `json:"notes"`
}

// OK reports whether no guarantee was broken.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Summary is a one-line account of the history and the verdict.
func (r Report) Summary() string {
	s := r.Stats
	return fmt.Sprintf("ops=%d calls=%d ok=%d refused=%d unknown=%d (accepted %d) indexed=%d shared-txns=%d max-group=%d incarnations=%d reads=%d applied-waits=%d drains=%d faults=%d wipes=%d violations=%d delete-windows=%d",
		s.Ops, s.Calls, s.OK, s.Refused, s.Unknown, s.UnknownAccepted, s.Indexed, s.SharedTxns, s.MaxGroup, s.Incarnations, s.Reads, s.Applied, s.Drains, s.Faults, s.Wipes,
		len(r.Violations), len(r.DeleteWindows))
}

// Count returns how many violations break rule.
func (r Report) Count(rule string) int {
	n := 0
	for _, v := range r.Violations {
		if v.Rule == rule {
			n++
		}
	}
	return n
}

// pos orders operations: by token (revision, then the batch's index in its
// transaction), then by the operation's position in the batch.
type pos struct {
	tok Token
	op  int
}

func (a pos) less(b pos) bool {
	if a.tok != b.tok {
		return a.tok.Less(b.tok)
	}
	return a.op < b.op
}

// String formats the position as TOKEN[OP], e.g. "12.3[0]".
func (a pos) String() string { return fmt.Sprintf("%s[%d]", a.tok, a.op) }

// acceptance of an operation.
const (
	notAccepted   = -1
	maybeAccepted = 0
	wasAccepted   = 1
)

// opRef is one operation of the history with what is known of it.
type opRef struct {
	call     *Call
	idx      int
	op       Op
	pos      pos
	known    bool // pos is known
	accepted int
}

func (o *opRef) String() string {
	what := o.op.Kind
	if o.op.Kind == KindSet {
		what += fmt.Sprintf(" %q", o.op.Value)
	}
	tok := "?"
	if o.known {
		tok = o.pos.String()
	}
	return fmt.Sprintf("%s (batch %s of %s/%d, token %s, %s)", what, o.call.ID, o.call.Name, o.call.Incarnation, tok, o.call.Result)
}

type checker struct {
	h        *History
	rep      *Report
	found    map[string]*Violation // dedup: rule|key|msg-key
	order    []string
	wins     map[string]*Violation
	winOrder []string

	byValue map[string]*opRef
	byKey   map[string][]*opRef // accepted with known position, by position
	deletes map[string][]*opRef // the deletes of byKey
	maybe   map[string][]*opRef // possibly accepted, position unknown
	misses  map[string][]*Read  // misses per key, by start
	lastInc map[string]int64
	ended   map[string]map[int64]bool // name -> incarnations whose registration ended
	terms   []int64
}

// Check checks h and reports every violation it finds.
func Check(h *History) Report {
	rep := &Report{}
	c := &checker{
		h: h, rep: rep, found: map[string]*Violation{}, wins: map[string]*Violation{},
		byValue: map[string]*opRef{}, byKey: map[string][]*opRef{}, deletes: map[string][]*opRef{},
		maybe: map[string][]*opRef{}, misses: map[string][]*Read{}, lastInc: map[string]int64{}, ended: map[string]map[int64]bool{},
	}
	c.index()
	c.checkFence()
	c.checkReadsApplied()
	c.checkPerReader()
	c.checkAcrossReaders()
	c.checkFinal()
	for _, k := range c.order {
		rep.Violations = append(rep.Violations, *c.found[k])
	}
	for _, k := range c.winOrder {
		rep.DeleteWindows = append(rep.DeleteWindows, *c.wins[k])
	}
	return *rep
}

// violate records a violation; dedup groups repeats of the same breach.
func (c *checker) violate(rule, key, dedup, format string, args ...any) {
	id := rule + "|" + key + "|" + dedup
	if v, ok := c.found[id]; ok {
		v.Count++
		return
	}
	c.found[id] = &Violation{Rule: rule, Key: key, Msg: fmt.Sprintf(format, args...), Count: 1}
	c.order = append(c.order, id)
}

func (c *checker) window(key, dedup, format string, args ...any) {
	if v, ok := c.wins[key+"|"+dedup]; ok {
		v.Count++
		return
	}
	c.wins[key+"|"+dedup] = &Violation{Rule: "delete-window", Key: key, Msg: fmt.Sprintf(format, args...), Count: 1}
	c.winOrder = append(c.winOrder, key+"|"+dedup)
}

func (c *checker) index() {
	h := c.h
	st := &c.rep.Stats
	st.Calls, st.Reads, st.Applied, st.Drains, st.Faults, st.Wipes = len(h.Calls), len(h.Reads), len(h.Applied), len(h.Drains), len(h.Faults), len(h.Wipes)
	accepted := map[string]*Accepted{}
	for i := range h.Final.Accepted {
		a := &h.Final.Accepted[i]
		accepted[a.ID] = a
	}
	incs := map[string]map[int64]bool{}
	callIDs := map[string]bool{}
	for ci := range h.Calls {
		call := &h.Calls[ci]
		callIDs[call.ID] = true
		st.Ops += len(call.Ops)
		if incs[call.Name] == nil {
			incs[call.Name] = map[int64]bool{}
		}
		incs[call.Name][call.Incarnation] = true
		if call.Incarnation > c.lastInc[call.Name] {
			c.lastInc[call.Name] = call.Incarnation
		}
		acc, known, tok := maybeAccepted, false, Token{}
		a, inEtcd := accepted[call.ID]
		switch call.Result {
		case OK:
			st.OK++
			if call.Token.Index != 0 {
				st.Indexed++
			}
			acc, known, tok = wasAccepted, true, call.Token
			if h.Final.EtcdHistory {
				if !inEtcd {
					c.violate(RuleLost, "", "notinetcd|"+call.ID, "batch %s of %s/%d was acknowledged with token %s but etcd never stored it", call.ID, call.Name, call.Incarnation, call.Token)
				} else if a.Token != call.Token {
					c.violate(RuleLost, "", "token|"+call.ID, "batch %s was acknowledged with token %s but etcd stored it with token %s", call.ID, call.Token, a.Token)
				}
			}
		case Refused:
			st.Refused++
			acc = notAccepted
			if inEtcd {
				c.violate(RuleRefusedApplied, "", "etcd|"+call.ID, "batch %s of %s/%d was refused (%s) but etcd accepted it with token %s", call.ID, call.Name, call.Incarnation, call.Err, a.Token)
			}
		default:
			st.Unknown++
			if h.Final.EtcdHistory {
				if inEtcd {
					st.UnknownAccepted++
					acc, known, tok = wasAccepted, true, a.Token
				} else {
					acc = notAccepted
				}
			}
		}
		for i, o := range call.Ops {
			ref := &opRef{call: call, idx: i, op: o, pos: pos{tok: tok, op: i}, known: known, accepted: acc}
			if o.Kind == KindSet {
				if prev, dup := c.byValue[o.Value]; dup {
					c.violate(RuleHistory, o.Key, "dup|"+o.Value, "value %q is written by both %s and %s", o.Value, prev, ref)
				}
				c.byValue[o.Value] = ref
			}
			switch {
			case acc == wasAccepted && known:
				c.byKey[o.Key] = append(c.byKey[o.Key], ref)
				if o.Kind == KindDelete {
					c.deletes[o.Key] = append(c.deletes[o.Key], ref)
				}
			case acc == maybeAccepted:
				c.maybe[o.Key] = append(c.maybe[o.Key], ref)
			}
		}
	}
	for _, m := range incs {
		st.Incarnations += len(m)
	}
	for _, m := range []map[string][]*opRef{c.byKey, c.deletes} {
		for _, refs := range m {
			sort.Slice(refs, func(i, j int) bool { return refs[i].pos.less(refs[j].pos) })
		}
	}
	for _, a := range h.Final.Accepted {
		if !callIDs[a.ID] {
			c.violate(RulePhantom, "", "batch|"+a.ID, "etcd accepted batch %s of %s/%d with token %s that no caller submitted", a.ID, a.Name, a.Incarnation, a.Token)
		}
	}
	c.checkTokens()
	for i := range h.Reads {
		if r := &h.Reads[i]; !r.Found {
			st.Misses++
			c.misses[r.Key] = append(c.misses[r.Key], r)
		}
	}
	for _, ms := range c.misses {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Start < ms[j].Start })
	}
	c.terms = append([]int64(nil), h.Final.Terms...)
	sort.Slice(c.terms, func(i, j int) bool { return c.terms[i] < c.terms[j] })
	for _, ev := range h.Final.Registrations {
		if ev.Rev > c.lastInc[ev.Name] && !ev.Deleted {
			c.lastInc[ev.Name] = ev.Rev
		}
	}
	// An incarnation ended when a later registration event of its name
	// (a newer incarnation or a delete) exists.
	byName := map[string][]RegEvent{}
	for _, ev := range h.Final.Registrations {
		byName[ev.Name] = append(byName[ev.Name], ev)
	}
	for name, evs := range byName {
		sort.Slice(evs, func(i, j int) bool { return evs[i].Rev < evs[j].Rev })
		c.ended[name] = map[int64]bool{}
		for i, ev := range evs {
			if !ev.Deleted && i+1 < len(evs) {
				c.ended[name][ev.Rev] = true
			}
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

// checkTokens checks that no two batches share a token, among the batches
// etcd stored and among the acknowledged tokens, and counts the
// transactions that stored several batches.
func (c *checker) checkTokens() {
	h := c.h
	var stored, acked []tokenOf
	for _, a := range h.Final.Accepted {
		stored = append(stored, tokenOf{a.Token, a.ID, a.Name, a.Incarnation})
	}
	for _, call := range h.Calls {
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
	toks := acked
	if h.Final.EtcdHistory {
		toks = stored
	}
	perRev := map[int64]map[uint32]bool{}
	for _, t := range toks {
		if perRev[t.tok.Revision] == nil {
			perRev[t.tok.Revision] = map[uint32]bool{}
		}
		perRev[t.tok.Revision][t.tok.Index] = true
	}
	st := &c.rep.Stats
	for _, idx := range perRev {
		if len(idx) > 1 {
			st.SharedTxns++
		}
		st.MaxGroup = max(st.MaxGroup, len(idx))
	}
}

// lastUpTo is the last accepted operation on key at or before p.
func (c *checker) lastUpTo(key string, p pos) *opRef {
	refs := c.byKey[key]
	i := sort.Search(len(refs), func(i int) bool { return p.less(refs[i].pos) })
	if i == 0 {
		return nil
	}
	return refs[i-1]
}

// lastBefore is the last accepted operation on key strictly before p.
func (c *checker) lastBefore(key string, p pos) *opRef {
	refs := c.byKey[key]
	i := sort.Search(len(refs), func(i int) bool { return !refs[i].pos.less(p) })
	if i == 0 {
		return nil
	}
	return refs[i-1]
}

// lastBeforeOfName is the last accepted operation on key ordered before p
// that was submitted under name.
func (c *checker) lastBeforeOfName(key string, p pos, name string) *opRef {
	refs := c.byKey[key]
	i := sort.Search(len(refs), func(i int) bool { return !refs[i].pos.less(p) })
	for i--; i >= 0; i-- {
		if refs[i].call.Name == name {
			return refs[i]
		}
	}
	return nil
}

// deleteAfter is the first accepted delete on key after p whose submission
// started before t (so it may have been applied by t).
func (c *checker) deleteAfter(key string, p pos, t int64) *opRef {
	refs := c.deletes[key]
	i := sort.Search(len(refs), func(i int) bool { return p.less(refs[i].pos) })
	for ; i < len(refs); i++ {
		if refs[i].call.Start < t {
			return refs[i]
		}
	}
	return nil
}

// opAfter reports whether an accepted operation on key after p was
// submitted before t.
func (c *checker) opAfter(key string, p pos, t int64) bool {
	refs := c.byKey[key]
	i := sort.Search(len(refs), func(i int) bool { return p.less(refs[i].pos) })
	for ; i < len(refs); i++ {
		if refs[i].call.Start < t {
			return true
		}
	}
	for _, m := range c.maybe[key] {
		if m.call.Start < t {
			return true
		}
	}
	return false
}

// maybeDelete reports whether a possibly accepted delete of key started
// before t.
func (c *checker) maybeDelete(key string, t int64) bool {
	for _, m := range c.maybe[key] {
		if m.op.Kind == KindDelete && m.call.Start < t {
			return true
		}
	}
	return false
}

// wiped reports whether memcached lost its items between from and to.
func (c *checker) wiped(from, to int64) bool {
	for _, w := range c.h.Wipes {
		if w.Down < to && w.Up > from {
			return true
		}
	}
	return false
}

// termAfter reports whether a leadership term was taken after revision rev
// (always true when the terms are not known).
func (c *checker) termAfter(rev int64) bool {
	if !c.h.Final.EtcdHistory {
		return true
	}
	i := sort.Search(len(c.terms), func(i int) bool { return c.terms[i] > rev })
	return i < len(c.terms)
}

// isDeleteWindow reports whether a read r of the stale set o, when at
// least floor was known applied to key since floorAt, is exactly the window
// package memfence documents: a former leader, holding o since before a
// newer term was taken, recreates key after a newer leader deleted it. It
// needs the evidence of that sequence: a reader found key absent after
// floorAt and before r started, a delete at or after floor may have been
// applied by then, and a term was taken after o was accepted.
func (c *checker) isDeleteWindow(key string, o *opRef, floor pos, floorAt int64, r *Read) bool {
	if o.op.Kind != KindSet || !o.known || !c.termAfter(o.pos.tok.Revision) {
		return false
	}
	ms := c.misses[key]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].Start >= floorAt })
	for ; i < len(ms) && ms[i].End < r.Start; i++ {
		refs := c.deletes[key]
		j := sort.Search(len(refs), func(j int) bool { return !refs[j].pos.less(floor) })
		for ; j < len(refs); j++ {
			if refs[j].call.Start < ms[i].End {
				return true
			}
		}
	}
	return false
}

// refOf resolves a read value to its operation; nil when it cannot be
// ordered (unknown value, wrong key, not accepted, position unknown).
func (c *checker) refOf(key, value string) *opRef {
	ref := c.byValue[value]
	if ref == nil || ref.op.Key != key || ref.accepted != wasAccepted || !ref.known {
		return nil
	}
	return ref
}

// checkFence checks every accepted batch against the registration history:
// its incarnation must be the current registration at its revision (G1).
func (c *checker) checkFence() {
	if !c.h.Final.EtcdHistory {
		return
	}
	byName := map[string][]RegEvent{}
	for _, ev := range c.h.Final.Registrations {
		byName[ev.Name] = append(byName[ev.Name], ev)
	}
	for _, evs := range byName {
		sort.Slice(evs, func(i, j int) bool { return evs[i].Rev < evs[j].Rev })
	}
	for _, a := range c.h.Final.Accepted {
		evs := byName[a.Name]
		// Registrations change in transactions of their own, so the
		// registration current at the batch's revision is the last one
		// before it; the index plays no part.
		i := sort.Search(len(evs), func(i int) bool { return evs[i].Rev >= a.Token.Revision })
		switch {
		case i == 0:
			c.violate(RuleFence, "", "fence|"+a.ID, "batch %s of %s/%d accepted with token %s before any registration of the name", a.ID, a.Name, a.Incarnation, a.Token)
		case evs[i-1].Deleted:
			c.violate(RuleFence, "", "fence|"+a.ID, "batch %s of %s/%d accepted with token %s after the registration ended at %d", a.ID, a.Name, a.Incarnation, a.Token, evs[i-1].Rev)
		case evs[i-1].Rev != a.Incarnation:
			c.violate(RuleFence, "", "fence|"+a.ID, "batch %s of %s/%d accepted with token %s while incarnation %d was current", a.ID, a.Name, a.Incarnation, a.Token, evs[i-1].Rev)
		}
	}
}

// checkReadsApplied checks that every value read was written by an
// accepted operation of that key that had been submitted (G1).
func (c *checker) checkReadsApplied() {
	for _, r := range c.h.Reads {
		if !r.Found {
			continue
		}
		ref := c.byValue[r.Value]
		switch {
		case ref == nil:
			c.violate(RulePhantom, r.Key, "value|"+r.Value, "reader %s saw value %q that no operation wrote", r.Reader, r.Value)
		case ref.op.Key != r.Key:
			c.violate(RulePhantom, r.Key, "value|"+r.Value, "reader %s saw value %q written by %s on key %s", r.Reader, r.Value, ref, ref.op.Key)
		case ref.accepted == notAccepted:
			c.violate(RuleRefusedApplied, r.Key, "value|"+r.Value, "reader %s saw the value of %s, which was not accepted (%s)", r.Reader, ref, ref.call.Err)
		case r.End < ref.call.Start:
			c.violate(RulePhantom, r.Key, "early|"+r.Value, "reader %s saw %s at %s, before it was submitted at %s", r.Reader, ref, ms(r.End), ms(ref.call.Start))
		}
	}
}

// readerState is what one reader has seen of one key.
type readerState struct {
	set        bool
	pos        pos
	ref        *opRef // the operation that set pos
	fromDelete bool   // pos is a delete that explained a miss
	wiped      bool   // a memcached restart explained a miss
	at         int64  // start of the read that set pos
}

// checkPerReader checks that no reader sees a key go back (G6).
func (c *checker) checkPerReader() {
	byReader := map[string][]int{}
	var readers []string
	for i, r := range c.h.Reads {
		if _, ok := byReader[r.Reader]; !ok {
			readers = append(readers, r.Reader)
		}
		byReader[r.Reader] = append(byReader[r.Reader], i)
	}
	for _, name := range readers {
		idx := byReader[name]
		sort.SliceStable(idx, func(i, j int) bool { return c.h.Reads[idx[i]].Start < c.h.Reads[idx[j]].Start })
		state := map[string]*readerState{}
		for _, i := range idx {
			r := &c.h.Reads[i]
			st := state[r.Key]
			if st == nil {
				st = &readerState{}
				state[r.Key] = st
			}
			if r.Found {
				ref := c.refOf(r.Key, r.Value)
				if ref == nil {
					continue
				}
				if st.set && ref.pos.less(st.pos) {
					if c.isDeleteWindow(r.Key, ref, st.pos, st.at, r) {
						c.window(r.Key, "back|"+r.Value, "reader %s saw %s at %s after it had seen %s applied at %s", r.Reader, ref, ms(r.Start), st.ref, ms(st.at))
					} else {
						c.violate(RuleBack, r.Key, r.Value, "reader %s saw %s at %s after it had seen %s at %s", r.Reader, ref, ms(r.Start), st.ref, ms(st.at))
					}
					continue
				}
				*st = readerState{set: true, pos: ref.pos, ref: ref, at: r.Start}
				continue
			}
			if !st.set || st.fromDelete || st.wiped {
				continue
			}
			// A memcached restart explains a miss without telling what was
			// applied, so it is tried first; a delete explains it only as
			// "at least that delete was applied".
			if c.wiped(st.at, r.End) {
				st.wiped = true
				continue
			}
			if d := c.deleteAfter(r.Key, st.pos, r.End); d != nil {
				*st = readerState{set: true, pos: d.pos, ref: d, fromDelete: true, at: r.Start}
				continue
			}
			if c.maybeDelete(r.Key, r.End) {
				continue
			}
			c.violate(RuleBack, r.Key, "absent|"+st.ref.call.ID, "reader %s found the key absent at %s after it had seen %s at %s, and no later delete was submitted", r.Reader, ms(r.Start), st.ref, ms(st.at))
		}
	}
}

// requirement is the oldest operation a key must reflect from some moment
// on, and why.
type requirement struct {
	ref  *opRef
	rule string
	why  string
	at   int64 // when it became known
}

// point is a moment after which some operations are known applied.
type point struct {
	at     int64
	read   *Read // a value read: its operation was applied
	ref    *opRef
	tok    Token  // WaitApplied: the watermark reached tok
	drain  *Drain // WaitDrained: the earlier incarnations are applied
	isWait bool
}

// checkAcrossReaders checks reads against what was known applied before
// they started: other readers' reads of the key (G5), reads of other keys
// (G2), WaitApplied (G8) and drained registrations (G7).
func (c *checker) checkAcrossReaders() {
	var pts []point
	for i := range c.h.Reads {
		r := &c.h.Reads[i]
		if !r.Found {
			continue
		}
		if ref := c.refOf(r.Key, r.Value); ref != nil {
			pts = append(pts, point{at: r.End, read: r, ref: ref})
		}
	}
	for _, a := range c.h.Applied {
		pts = append(pts, point{at: a.End, tok: a.Token, isWait: true})
	}
	for i := range c.h.Drains {
		pts = append(pts, point{at: c.h.Drains[i].End, drain: &c.h.Drains[i]})
	}
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].at < pts[j].at })
	reads := make([]int, len(c.h.Reads))
	for i := range reads {
		reads[i] = i
	}
	sort.SliceStable(reads, func(i, j int) bool { return c.h.Reads[reads[i]].Start < c.h.Reads[reads[j]].Start })

	keys := c.allKeys()
	seen := map[string]*topTwo{} // key -> the two readers that saw the newest
	req := map[string]requirement{}
	raise := func(key string, r requirement) {
		if r.ref == nil {
			return
		}
		if cur, ok := req[key]; !ok || cur.ref.pos.less(r.ref.pos) {
			req[key] = r
		}
	}
	next := 0
	for _, ri := range reads {
		r := &c.h.Reads[ri]
		for ; next < len(pts) && pts[next].at < r.Start; next++ {
			p := pts[next]
			switch {
			case p.read != nil:
				m := seen[p.read.Key]
				if m == nil {
					m = &topTwo{}
					seen[p.read.Key] = m
				}
				m.add(p.read.Reader, readerState{set: true, pos: p.ref.pos, ref: p.ref, at: p.read.Start})
				for _, k := range keys {
					if k == p.read.Key {
						continue
					}
					// Token order holds within a name (all its incarnations)
					// and within a key; different names' writes of one round
					// may land in either order (README, "Order across names").
					before := c.lastBeforeOfName(k, p.ref.pos, p.ref.call.Name)
					if before == nil || c.opAfter(k, p.ref.pos, p.at) {
						// A newer operation on k may have been applied in the
						// same run as p's, skipping the older ones.
						continue
					}
					raise(k, requirement{ref: before, rule: RuleOrder, at: p.at, why: fmt.Sprintf("reader %s saw %s at %s", p.read.Reader, p.ref, ms(p.read.Start))})
				}
			case p.isWait:
				for _, k := range keys {
					// Up to p.tok itself: a batch of the same transaction
					// with a higher index is not covered.
					raise(k, requirement{ref: c.lastUpTo(k, pos{p.tok, math.MaxInt}), rule: RuleApplied, at: p.at, why: fmt.Sprintf("WaitApplied(%s) returned at %s", p.tok, ms(p.at))})
				}
			case p.drain != nil:
				for _, k := range keys {
					raise(k, requirement{ref: c.lastOfEarlier(k, p.drain.Name, p.drain.Incarnation), rule: RuleDrain, at: p.at,
						why: fmt.Sprintf("registration %s/%d with WaitDrained returned at %s", p.drain.Name, p.drain.Incarnation, ms(p.at))})
				}
			}
		}
		c.checkAgainstOthers(r, seen[r.Key])
		if q, ok := req[r.Key]; ok {
			c.checkRequirement(r, q)
		}
	}
}

// checkAgainstOthers checks a read against what other readers had seen of
// its key before it started (G5).
func (c *checker) checkAgainstOthers(r *Read, others *topTwo) {
	if others == nil {
		return
	}
	newest, who := others.except(r.Reader)
	if !newest.set {
		return
	}
	if r.Found {
		ref := c.refOf(r.Key, r.Value)
		if ref == nil || !ref.pos.less(newest.pos) {
			return
		}
		if c.isDeleteWindow(r.Key, ref, newest.pos, newest.at, r) {
			c.window(r.Key, "stale|"+r.Value, "reader %s saw %s at %s after reader %s had seen %s at %s", r.Reader, ref, ms(r.Start), who, newest.ref, ms(newest.at))
			return
		}
		c.violate(RuleStale, r.Key, r.Value, "reader %s saw %s at %s after reader %s had seen %s at %s", r.Reader, ref, ms(r.Start), who, newest.ref, ms(newest.at))
		return
	}
	if c.deleteAfter(r.Key, newest.pos, r.End) != nil || c.maybeDelete(r.Key, r.End) || c.wiped(newest.at, r.End) {
		return
	}
	c.violate(RuleStale, r.Key, "absent|"+newest.ref.call.ID, "reader %s found the key absent at %s after reader %s had seen %s at %s, and no later delete was submitted", r.Reader, ms(r.Start), who, newest.ref, ms(newest.at))
}

// topTwo keeps the newest position seen of a key by the two readers that
// saw the newest, which is all that "the newest seen by any other reader"
// needs, however many readers there are.
type topTwo struct {
	first, second   readerState
	firstR, secondR string
}

// add records that reader saw st.
func (t *topTwo) add(reader string, st readerState) {
	switch {
	case reader == t.firstR && t.first.set:
		if t.first.pos.less(st.pos) {
			t.first = st
		}
	case reader == t.secondR && t.second.set:
		if t.second.pos.less(st.pos) {
			t.second = st
		}
		if t.first.pos.less(t.second.pos) {
			t.first, t.second, t.firstR, t.secondR = t.second, t.first, t.secondR, t.firstR
		}
	case !t.first.set || t.first.pos.less(st.pos):
		t.second, t.secondR = t.first, t.firstR
		t.first, t.firstR = st, reader
	case !t.second.set || t.second.pos.less(st.pos):
		t.second, t.secondR = st, reader
	}
}

// except returns the newest seen by a reader other than reader.
func (t *topTwo) except(reader string) (readerState, string) {
	if t.firstR != reader {
		return t.first, t.firstR
	}
	return t.second, t.secondR
}

// checkRequirement checks a read against the oldest operation its key must
// reflect.
func (c *checker) checkRequirement(r *Read, q requirement) {
	need := q.ref
	if r.Found {
		ref := c.refOf(r.Key, r.Value)
		if ref == nil || !ref.pos.less(need.pos) {
			return
		}
		if c.isDeleteWindow(r.Key, ref, need.pos, q.at, r) {
			c.window(r.Key, "req|"+r.Value, "reader %s saw %s at %s although %s was applied: %s", r.Reader, ref, ms(r.Start), need, q.why)
			return
		}
		c.violate(q.rule, r.Key, r.Value+"|"+need.call.ID, "reader %s saw %s at %s although %s must have been applied: %s", r.Reader, ref, ms(r.Start), need, q.why)
		return
	}
	if need.op.Kind == KindDelete || c.deleteAfter(r.Key, need.pos, r.End) != nil || c.maybeDelete(r.Key, r.End) || c.wiped(need.call.Start, r.End) {
		return
	}
	c.violate(q.rule, r.Key, "absent|"+need.call.ID, "reader %s found the key absent at %s although %s must have been applied: %s", r.Reader, ms(r.Start), need, q.why)
}

// lastOfEarlier is the last accepted operation on key of an incarnation of
// name older than inc.
func (c *checker) lastOfEarlier(key, name string, inc int64) *opRef {
	refs := c.byKey[key]
	for i := len(refs) - 1; i >= 0; i-- {
		if refs[i].call.Name == name && refs[i].call.Incarnation < inc {
			return refs[i]
		}
	}
	return nil
}

func (c *checker) allKeys() []string {
	set := map[string]bool{}
	for _, k := range c.h.Keys {
		set[k] = true
	}
	for k := range c.byKey {
		set[k] = true
	}
	for k := range c.h.Final.Memcached {
		set[k] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkFinal checks the final state: every accepted operation is under the
// watermark, nothing is pending, the watermark never went back, and every
// key holds the token-ordered replay of the accepted operations (G3, G4).
func (c *checker) checkFinal() {
	f := &c.h.Final
	if f.Pending > 0 {
		c.violate(RuleLost, "", "pending", "%d batches are still pending after the leader was given time to drain", f.Pending)
	}
	for i := 1; i < len(f.Watermarks); i++ {
		if f.Watermarks[i].Less(f.Watermarks[i-1]) {
			c.violate(RuleWatermark, "", fmt.Sprint(i), "the applied watermark went back from %s to %s", f.Watermarks[i-1], f.Watermarks[i])
		}
	}
	for _, refs := range c.byKey {
		for _, ref := range refs {
			// A watermark R.2 covers R.1 and R.2, not R.3.
			if !f.Watermark.Less(ref.pos.tok) {
				continue
			}
			rule := RuleLost
			if ref.call.Incarnation < c.lastInc[ref.call.Name] || c.ended[ref.call.Name][ref.call.Incarnation] {
				rule = RuleOldFirst
			}
			c.violate(rule, ref.op.Key, "wm|"+ref.call.ID, "%s is above the final watermark %s", ref, f.Watermark)
		}
	}
	for _, k := range c.allKeys() {
		item := f.Memcached[k]
		var held *opRef
		if item.Found {
			held = c.byValue[item.Value]
			switch {
			case held == nil:
				c.violate(RulePhantom, k, "final", "final value %q was written by no operation", item.Value)
				continue
			case held.op.Key != k:
				c.violate(RulePhantom, k, "final", "final value %q was written by %s on key %s", item.Value, held, held.op.Key)
				continue
			case held.accepted == notAccepted:
				c.violate(RuleRefusedApplied, k, "final", "final value is that of %s, which was not accepted (%s)", held, held.call.Err)
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
		if !item.Found && want != nil && c.wiped(want.call.Start, math.MaxInt64) {
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

func ms(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }

// Describe formats the report's violations and windows, at most max of each
// (all when max <= 0).
func (r Report) Describe(max int) string {
	var b strings.Builder
	write := func(title string, vs []Violation) {
		if len(vs) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (%d):\n", title, len(vs))
		for i, v := range vs {
			if max > 0 && i == max {
				fmt.Fprintf(&b, "  ... %d more\n", len(vs)-max)
				break
			}
			fmt.Fprintf(&b, "  %s\n", v)
		}
	}
	write("violations", r.Violations)
	write("delete windows (documented, not violations)", r.DeleteWindows)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}
