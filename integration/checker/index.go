package checker

import (
	"fmt"
	"sort"
)

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
	return fmt.Sprintf("%s (batch %s of %s/%d, token %s, %s)",
		what, o.call.ID, o.call.Name, o.call.Incarnation, tok, o.call.Result)
}

// checker holds a history's index, built once by index, and the
// violations the rules find in it.
type checker struct {
	h        *History
	rep      *Report
	found    map[string]*Violation // dedup: rule|key|msg-key
	order    []string
	wins     map[string]*Violation
	winOrder []string
	// recreated holds "key|value" of every stale value a delete window
	// excused.
	recreated map[string]bool

	ops          []*opRef             // every operation, in the order of the calls
	byValue      map[string]*opRef    // the last operation that set each value
	byKey        map[string][]*opRef  // accepted with known position, by position
	deletes      map[string][]*opRef  // the deletes of byKey
	maybe        map[string][]*opRef  // possibly accepted, position unknown
	stored       map[string]*Accepted // the batches etcd stored, by batch id
	submitted    map[string]bool      // the batch ids of the calls
	misses       map[string][]*Read   // misses per key, by start
	readsByStart []int                // indexes into h.Reads, by start
	regs         map[string][]RegEvent
	lastInc      map[string]int64
	ended        map[string]map[int64]bool // name -> incarnations whose registration ended
	terms        []int64
}

func newChecker(h *History) *checker {
	return &checker{
		h: h, rep: &Report{}, found: map[string]*Violation{}, wins: map[string]*Violation{}, recreated: map[string]bool{},
		byValue: map[string]*opRef{}, byKey: map[string][]*opRef{}, deletes: map[string][]*opRef{},
		maybe: map[string][]*opRef{}, stored: map[string]*Accepted{}, submitted: map[string]bool{},
		misses: map[string][]*Read{}, regs: map[string][]RegEvent{}, lastInc: map[string]int64{},
		ended: map[string]map[int64]bool{},
	}
}

// index builds what the rules look up and counts the history's stats.
func (c *checker) index() {
	h := c.h
	st := &c.rep.Stats
	st.Calls, st.Reads, st.Applied, st.Drains, st.Faults, st.Wipes =
		len(h.Calls), len(h.Reads), len(h.Applied), len(h.Drains), len(h.Faults), len(h.Wipes)
	st.Overlap, st.Kinds = faultStats(h.Faults)
	for i := range h.Final.Accepted {
		a := &h.Final.Accepted[i]
		c.stored[a.ID] = a
	}
	c.indexCalls()
	c.countGroups()
	c.indexReads()
	c.indexRegistrations()
}

// indexCalls decides each operation's acceptance and position and indexes
// the operations by value and by key.
func (c *checker) indexCalls() {
	h := c.h
	st := &c.rep.Stats
	incs := map[string]map[int64]bool{}
	for ci := range h.Calls {
		call := &h.Calls[ci]
		c.submitted[call.ID] = true
		st.Ops += len(call.Ops)
		if incs[call.Name] == nil {
			incs[call.Name] = map[int64]bool{}
		}
		incs[call.Name][call.Incarnation] = true
		if call.Incarnation > c.lastInc[call.Name] {
			c.lastInc[call.Name] = call.Incarnation
		}
		acc, known, tok := maybeAccepted, false, Token{}
		switch call.Result {
		case OK:
			st.OK++
			if call.Token.Index != 0 {
				st.Indexed++
			}
			acc, known, tok = wasAccepted, true, call.Token
		case Refused:
			st.Refused++
			acc = notAccepted
		default:
			st.Unknown++
			if h.Final.EtcdHistory {
				if a, inEtcd := c.stored[call.ID]; inEtcd {
					st.UnknownAccepted++
					acc, known, tok = wasAccepted, true, a.Token
				} else {
					acc = notAccepted
				}
			}
		}
		for i, o := range call.Ops {
			ref := &opRef{call: call, idx: i, op: o, pos: pos{tok: tok, op: i}, known: known, accepted: acc}
			c.ops = append(c.ops, ref)
			if o.Kind == KindSet {
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
}

// countGroups counts the transactions that stored several batches.
func (c *checker) countGroups() {
	perRev := map[int64]map[uint32]bool{}
	add := func(t Token) {
		if perRev[t.Revision] == nil {
			perRev[t.Revision] = map[uint32]bool{}
		}
		perRev[t.Revision][t.Index] = true
	}
	if c.h.Final.EtcdHistory {
		for _, a := range c.h.Final.Accepted {
			add(a.Token)
		}
	} else {
		for _, call := range c.h.Calls {
			if call.Result == OK {
				add(call.Token)
			}
		}
	}
	st := &c.rep.Stats
	for _, idx := range perRev {
		if len(idx) > 1 {
			st.SharedTxns++
		}
		st.MaxGroup = max(st.MaxGroup, len(idx))
	}
}

// indexReads orders the reads by start and indexes the misses by key.
func (c *checker) indexReads() {
	h := c.h
	for i := range h.Reads {
		if r := &h.Reads[i]; !r.Found {
			c.rep.Stats.Misses++
			c.misses[r.Key] = append(c.misses[r.Key], r)
		}
	}
	for _, ms := range c.misses {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Start < ms[j].Start })
	}
	c.readsByStart = make([]int, len(h.Reads))
	for i := range c.readsByStart {
		c.readsByStart[i] = i
	}
	sort.SliceStable(c.readsByStart, func(i, j int) bool {
		return h.Reads[c.readsByStart[i]].Start < h.Reads[c.readsByStart[j]].Start
	})
}

// indexRegistrations orders the registration changes and terms by
// revision and finds each name's newest incarnation and the incarnations
// that ended.
func (c *checker) indexRegistrations() {
	h := c.h
	c.terms = append([]int64(nil), h.Final.Terms...)
	sort.Slice(c.terms, func(i, j int) bool { return c.terms[i] < c.terms[j] })
	for _, ev := range h.Final.Registrations {
		if ev.Rev > c.lastInc[ev.Name] && !ev.Deleted {
			c.lastInc[ev.Name] = ev.Rev
		}
		c.regs[ev.Name] = append(c.regs[ev.Name], ev)
	}
	// An incarnation ended when a later registration event of its name
	// (a newer incarnation or a delete) exists.
	for name, evs := range c.regs {
		sort.Slice(evs, func(i, j int) bool { return evs[i].Rev < evs[j].Rev })
		c.ended[name] = map[int64]bool{}
		for i, ev := range evs {
			if !ev.Deleted && i+1 < len(evs) {
				c.ended[name][ev.Rev] = true
			}
		}
	}
}

// superseded reports whether ref's incarnation was followed by a newer one
// or ended.
func (c *checker) superseded(ref *opRef) bool {
	return ref.call.Incarnation < c.lastInc[ref.call.Name] || c.ended[ref.call.Name][ref.call.Incarnation]
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

// wiped reports whether the memcached server of key lost its items
// between from and to.
func (c *checker) wiped(key string, from, to int64) bool {
	for _, w := range c.h.Wipes {
		if w.Down < to && w.Up > from && w.covers(key) {
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

// refOf resolves a read value to its operation; nil when it cannot be
// ordered (unknown value, wrong key, not accepted, position unknown).
func (c *checker) refOf(key, value string) *opRef {
	ref := c.byValue[value]
	if ref == nil || ref.op.Key != key || ref.accepted != wasAccepted || !ref.known {
		return nil
	}
	return ref
}

// allKeys is every key of the history, the accepted operations and the
// final state, sorted.
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
