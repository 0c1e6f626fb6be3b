package inspect

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// Registration statuses.
const (
	StatusActive   = "active"
	StatusDraining = "draining"
)

// RegistrationView is one incarnation as inspection shows it: every current
// registration, and every earlier incarnation that still has unapplied
// operations (status draining). An incarnation that is not current and has
// nothing pending is not listed.
type RegistrationView struct {
	Name        string `json:"name"`
	Incarnation int64  `json:"incarnation"`
	Status      string `json:"status"`
	// Pending counts the incarnation's pending operations. A page reads at
	// most MaxCountedBatches pending batches, shared out among its
	// incarnations (see share), and counts one operation for each batch it
	// does not read: PendingLowerBound reports such a count, a lower bound.
	Pending           int             `json:"pending"`
	PendingLowerBound bool            `json:"pending_lower_bound,omitempty"`
	Holder            registry.Holder `json:"holder"`
	// TTLLeft is the lease time left; zero for draining incarnations.
	TTLLeft time.Duration `json:"ttl_left_ns"`
}

// RegistrationsPage is one page of the registrations view.
type RegistrationsPage struct {
	// Registrations are the page's rows, by name, then incarnation.
	Registrations []RegistrationView
	// NextToken asks for the next page (PageRequest.Token); empty on the
	// last page.
	NextToken string
}

// RegistrationsPage reads one page of the registrations view, sorted by
// name, then incarnation: a name's draining incarnations come before its
// current one.
//
// Its cost follows the page, not the namespace: the page's registrations
// are one range read from the token's name on; the names with pending
// batches are found among the keys of the ops range up to the page's last
// registration, read keys only (see pendingNames); the pending operations
// are counted for the page's names only, reading at most MaxCountedBatches
// batches (see fill), and each lease's time left is looked up for the
// page's active rows only. The one part that grows with the namespace is
// etcd's: every range read walks etcd's in-memory key index from its start
// to its end, to count the keys it answers with.
func (in *Inspector) RegistrationsPage(ctx context.Context, req PageRequest) (RegistrationsPage, error) {
	if err := req.Validate(); err != nil {
		return RegistrationsPage{}, err
	}
	cur, err := decodeTokenOf(req.Token, kindRegistrations)
	if err != nil {
		return RegistrationsPage{}, err
	}
	size := req.size()
	// Every name after the token's has at least one row, but the token's
	// own name may have none left.
	groups, more, err := in.nameGroups(ctx, cur, size+1)
	if err != nil {
		return RegistrationsPage{}, err
	}
	if err := in.fill(ctx, groups); err != nil {
		return RegistrationsPage{}, err
	}
	var page RegistrationsPage
	bytes := 0
	for _, g := range groups {
		for _, row := range g.rows() {
			if cur.name != "" && row.Name == cur.name && row.Incarnation <= cur.inc {
				continue
			}
			if n := len(page.Registrations); n == size || (n > 0 && bytes >= MaxPageBytes) {
				last := page.Registrations[n-1]
				page.NextToken = position{kind: kindRegistrations, name: last.Name, inc: last.Incarnation}.encode()
				return page, nil
			}
			page.Registrations = append(page.Registrations, row)
			bytes += rowBytes(row)
		}
	}
	if more && len(groups) > 0 {
		// Names read past what the page held may follow: go on after the
		// last one read.
		page.NextToken = position{kind: kindRegistrations, name: groups[len(groups)-1].name, inc: afterName}.encode()
	}
	return page, nil
}

// Registrations reads every page of the registrations view and returns all
// its rows. It holds the whole view in memory: callers that show or send it
// read it a page at a time with RegistrationsPage.
func (in *Inspector) Registrations(ctx context.Context) ([]RegistrationView, error) {
	var out []RegistrationView
	req := PageRequest{Size: MaxPageSize}
	for {
		page, err := in.RegistrationsPage(ctx, req)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Registrations...)
		if page.NextToken == "" {
			return out, nil
		}
		req.Token = page.NextToken
	}
}

// rowFixedBytes is what a row's fields other than name and host count
// towards MaxPageBytes.
const rowFixedBytes = 64

func rowBytes(r RegistrationView) int { return len(r.Name) + len(r.Holder.Host) + rowFixedBytes }

// nameGroup is one name of a page: its current registration, if any, and
// whether it has pending batches; fill adds the pending counts and the
// lease's time left.
type nameGroup struct {
	name    string
	reg     *current
	pending bool

	incs []*incCount // pending incarnations, in order
	ttl  time.Duration
}

// incCount is the count of one incarnation's pending batches and of their
// operations.
type incCount struct {
	inc    int64
	prefix string
	rev    int64 // the revision the batches were counted at
	opCount
	read int // batches whose operations are counted
}

// current is a name's current registration as its record holds it.
type current struct {
	inc    int64
	lease  clientv3.LeaseID
	holder registry.Holder
}

// nameGroups returns, in name order, up to limit names from the cursor's
// on (its name included unless every row of it was listed) that are
// registered or have pending batches; more reports that names may follow.
func (in *Inspector) nameGroups(ctx context.Context, cur position, limit int) ([]*nameGroup, bool, error) {
	regs := regReader{in: in, chunk: limit}
	switch {
	case cur.name == "":
		regs.from = in.layout.RegPrefix()
	case cur.inc == afterName:
		regs.from = etcdscan.After(in.layout.Reg(cur.name))
	default:
		regs.from = in.layout.Reg(cur.name)
	}
	// The page holds at most limit names, so the first chunk of
	// registrations read is all it can use: names with pending batches are
	// looked for up to its last name, unless it was the last chunk.
	if _, _, err := regs.peek(ctx); err != nil {
		return nil, false, err
	}
	pend := pendingNames{in: in, from: cur.name}
	if cur.name != "" && cur.inc == afterName {
		pend.from = cur.name + "\x00"
	}
	if !regs.done {
		pend.bound = regs.buf[len(regs.buf)-1].name
	}
	for _, r := range regs.buf {
		pend.skip = append(pend.skip, r.name)
	}
	var out []*nameGroup
	for len(out) < limit {
		reg, haveReg, err := regs.peek(ctx)
		if err != nil {
			return nil, false, err
		}
		name, havePend, err := pend.peek(ctx)
		if err != nil {
			return nil, false, err
		}
		if !haveReg && !havePend {
			return out, false, nil
		}
		g := &nameGroup{}
		switch {
		case haveReg && (!havePend || reg.name <= name):
			// In gap mode pend leaves registered names out: fill looks.
			g.name, g.reg, g.pending = reg.name, &reg.current, pend.gapMode
			regs.next()
		default:
			g.name = name
		}
		if havePend && name == g.name {
			g.pending = true
			pend.next()
		}
		out = append(out, g)
	}
	return out, true, nil
}

// fill reads the groups' pending counts and their leases' time left, each
// lease once.
//
// The operations of a page's pending batches are counted over at most
// MaxCountedBatches batches in all, shared out by share; each further batch
// counts as one operation (a batch holds at least one), and its row's count
// is a lower bound. The incarnations are found and their batches counted by
// etcd (count-only) first, so that the share of each is known before a
// value is read.
func (in *Inspector) fill(ctx context.Context, groups []*nameGroup) error {
	var pending []*nameGroup
	ttls := map[clientv3.LeaseID]time.Duration{}
	for _, g := range groups {
		if g.pending {
			pending = append(pending, g)
		}
		if g.reg != nil && g.reg.lease != 0 {
			ttls[g.reg.lease] = 0
		}
	}
	leases := slices.Collect(maps.Keys(ttls))
	found := make([]time.Duration, len(leases))
	err := forEach(ctx, len(pending)+len(leases), func(ctx context.Context, i int) error {
		if i < len(pending) {
			return in.pendingIncarnations(ctx, pending[i])
		}
		i -= len(pending)
		// A lease that is gone, or a lookup that fails, leaves the time
		// left at zero: the registration is on its way out.
		if ttl, err := in.cli.TimeToLive(ctx, leases[i]); err == nil && ttl.TTL > 0 {
			found[i] = time.Duration(ttl.TTL) * time.Second
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	for i, l := range leases {
		ttls[l] = found[i]
	}
	var all []*incCount
	for _, g := range groups {
		if g.reg != nil {
			g.ttl = ttls[g.reg.lease]
		}
		all = append(all, g.incs...)
	}
	reads := share(all, MaxCountedBatches)
	err = forEach(ctx, len(reads), func(ctx context.Context, i int) error {
		c := reads[i]
		n, read, err := in.sumOps(ctx, c.prefix, keyspace.PrefixEnd(c.prefix), c.rev, c.read)
		c.Ops, c.read = n, read
		return err
	})
	if err != nil {
		return err
	}
	for _, g := range pending {
		for _, c := range g.incs {
			c.Ops += c.Batches - c.read
			c.LowerBound = c.read < c.Batches
		}
	}
	return nil
}

// share sets the batches to read (read) of each of incs, budget in all:
// each gets as many as it has up to an equal share, and what the small ones
// leave goes to the others in equal shares, so that every incarnation with
// fewer batches than its share is counted exactly. It returns those with
// batches to read, in the order of incs.
func share(incs []*incCount, budget int) []*incCount {
	bySize := slices.Clone(incs)
	slices.SortStableFunc(bySize, func(a, b *incCount) int { return cmp.Compare(a.Batches, b.Batches) })
	for i, c := range bySize {
		c.read = min(c.Batches, budget/(len(bySize)-i))
		budget -= c.read
	}
	return slices.DeleteFunc(slices.Clone(incs), func(c *incCount) bool { return c.read == 0 })
}

// pendingIncarnations finds the group's pending incarnations, skipping from
// one to the next (a keys-only read of one key each), and counts the
// batches of each (count-only).
func (in *Inspector) pendingIncarnations(ctx context.Context, g *nameGroup) error {
	start := in.layout.NameOpsPrefix(g.name)
	end := keyspace.PrefixEnd(start)
	for {
		resp, err := in.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		if err != nil {
			return fmt.Errorf("inspect: read pending of %q: %w", g.name, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		key := string(resp.Kvs[0].Key)
		bk, err := in.layout.ParseBatch(key)
		if err != nil {
			start = etcdscan.After(key)
			continue
		}
		c := &incCount{inc: bk.Incarnation, prefix: in.layout.IncarnationOpsPrefix(g.name, bk.Incarnation)}
		if c.Batches, c.rev, err = in.countRecords(ctx, c.prefix, keyspace.PrefixEnd(c.prefix)); err != nil {
			return err
		}
		g.incs = append(g.incs, c)
		start = keyspace.PrefixEnd(c.prefix)
	}
}

// rows returns the group's rows by incarnation. An incarnation whose
// pending records all failed to decode has no row: the leader sets them
// aside (see Status.Quarantined).
func (g *nameGroup) rows() []RegistrationView {
	var out []RegistrationView
	active := false
	for _, c := range g.incs {
		if c.Ops == 0 && !c.LowerBound && (g.reg == nil || c.inc != g.reg.inc) {
			continue
		}
		v := RegistrationView{Name: g.name, Incarnation: c.inc, Status: StatusDraining, Pending: c.Ops, PendingLowerBound: c.LowerBound}
		if g.reg != nil && c.inc == g.reg.inc {
			v.Status, v.Holder, v.TTLLeft = StatusActive, g.reg.holder, g.ttl
			active = true
		}
		out = append(out, v)
	}
	if g.reg != nil && !active {
		out = append(out, RegistrationView{
			Name: g.name, Incarnation: g.reg.inc, Status: StatusActive, Holder: g.reg.holder, TTLLeft: g.ttl,
		})
		slices.SortFunc(out, func(a, b RegistrationView) int { return cmp.Compare(a.Incarnation, b.Incarnation) })
	}
	return out
}

// regReader reads registrations in key (name) order, a chunk at a time.
type regReader struct {
	in    *Inspector
	from  string // the next key to read from
	chunk int
	buf   []namedReg
	done  bool
}

// namedReg is a registration record read.
type namedReg struct {
	name string
	current
}

func (r *regReader) peek(ctx context.Context) (namedReg, bool, error) {
	if len(r.buf) == 0 && !r.done {
		resp, err := r.in.cli.Get(ctx, r.from,
			clientv3.WithRange(keyspace.PrefixEnd(r.in.layout.RegPrefix())), clientv3.WithLimit(int64(r.chunk)))
		if err != nil {
			return namedReg{}, false, fmt.Errorf("inspect: read registrations: %w", err)
		}
		for _, kv := range resp.Kvs {
			reg := namedReg{name: r.in.layout.NameFromReg(string(kv.Key)),
				current: current{inc: kv.ModRevision, lease: clientv3.LeaseID(kv.Lease)}}
			// A record that cannot be decoded is still a registration:
			// it is listed with no holder.
			_ = json.Unmarshal(kv.Value, &reg.holder)
			r.buf = append(r.buf, reg)
		}
		r.done = !resp.More || len(resp.Kvs) == 0
		if n := len(resp.Kvs); n > 0 {
			r.from = etcdscan.After(string(resp.Kvs[n-1].Key))
		}
	}
	if len(r.buf) == 0 {
		return namedReg{}, false, nil
	}
	return r.buf[0], true, nil
}

func (r *regReader) next() { r.buf = r.buf[1:] }

// pendingNamesRead is how many keys one read of pendingNames takes (a
// variable for the tests, which make it small to meet backlogs).
var pendingNamesRead int64 = 512

// pendingNames hands out, in name order, the names that have keys in the
// ops range, from a name on.
//
// Batch keys are <ops>/<name>/<incarnation>/<id>, so the ops range is in
// the order of name+"/", which is name order except that a name sorts after
// its extensions by a character below '/' ("agent-7/" < "agent/"; names may
// hold '!' to '.'). A name that sorts before another but has its keys after
// can only be a prefix of it followed by such a character: before handing
// out a name, its prefixes of that kind are looked up by themselves (a
// read of their own keys), which costs one read per such character of the
// name, usually none, each done once.
//
// The keys are read pendingNamesRead at a time, keys only, and a read goes
// on after the last name it met (skipping the rest of that name's keys).
// Each read of a range makes etcd walk its key index to the range's end
// (to count the keys in its answer), so when the page holds registrations
// up to a bound, the reads stop at the bound's keys and the bound's
// prefixes of that kind are looked up by themselves at the end. And once a
// read meets more keys than it takes (a backlog), the reads leave out the
// keys of the page's registered names (skip), whose pending batches fill
// finds by name: they read the gaps between those names' keys, all at once
// (gap mode), so that no read walks a registered name's backlog.
type pendingNames struct {
	in *Inspector
	// from is the first name wanted; bound, when set, the last.
	from, bound string
	// skip are the page's registered names.
	skip []string

	started   bool
	start     string   // the next key to read from
	queue     []string // names read, in key order, not handed out yet
	exhausted bool     // the range up to the bound is read
	head      string   // the name peek found, handed out by next
	haveHead  bool
	// done holds the names handed out, or looked up and found without
	// keys.
	done map[string]bool
	// gapMode is set once the reads leave out the skip names' keys; the
	// names handed out from then on are only the others (and prefixes).
	gapMode bool
	gaps    []gap // the key ranges left to read in gap mode, in key order
}

// gap is a key range of the ops range between registered names' keys, and
// its first read when it was read ahead.
type gap struct {
	start, end string
	read       *clientv3.GetResponse
}

// peek returns the next name, and false when there is none.
func (p *pendingNames) peek(ctx context.Context) (string, bool, error) {
	if p.haveHead {
		return p.head, true, nil
	}
	if !p.started {
		p.started, p.start, p.done = true, p.in.layout.OpsPrefix()+p.from, map[string]bool{}
	}
	for {
		if len(p.queue) == 0 {
			if !p.exhausted {
				if err := p.read(ctx); err != nil {
					return "", false, err
				}
				continue
			}
			if p.bound == "" {
				return "", false, nil
			}
			// The bound's prefixes that sort before it have their keys
			// past the range read.
			pre, ok, err := p.firstPrefix(ctx, p.bound)
			if err != nil || !ok {
				return "", false, err
			}
			p.head, p.haveHead = pre, true
			return pre, true, nil
		}
		n := p.queue[0]
		if n < p.from || p.done[n] || (p.bound != "" && n > p.bound) {
			p.queue = p.queue[1:]
			continue
		}
		pre, ok, err := p.firstPrefix(ctx, n)
		if err != nil {
			return "", false, err
		}
		if !ok {
			pre = n
			p.queue = p.queue[1:]
		}
		p.head, p.haveHead = pre, true
		return pre, true, nil
	}
}

// next hands out the name peek returned.
func (p *pendingNames) next() {
	p.done[p.head] = true
	p.haveHead = false
}

// firstPrefix returns the shortest prefix of n, from p.from on, that is
// followed in n by a character below '/' and has keys in the ops range.
func (p *pendingNames) firstPrefix(ctx context.Context, n string) (string, bool, error) {
	for j := 1; j < len(n); j++ {
		pre := n[:j]
		if n[j] >= '/' || pre < p.from || p.done[pre] {
			continue
		}
		has, err := p.in.hasPending(ctx, pre)
		if err != nil {
			return "", false, err
		}
		if has {
			return pre, true, nil
		}
		p.done[pre] = true
	}
	return "", false, nil
}

// end is the end of the range the reads cover: the bound's keys' end, or
// the ops range's.
func (p *pendingNames) end() string {
	if p.bound != "" {
		return keyspace.PrefixEnd(p.in.layout.NameOpsPrefix(p.bound))
	}
	return p.in.layout.OpsEnd()
}

// read reads the next keys and queues their names.
func (p *pendingNames) read(ctx context.Context) error {
	if p.gapMode {
		return p.readGap(ctx)
	}
	resp, err := p.get(ctx, p.start, p.end())
	if err != nil {
		return err
	}
	if !p.queueNames(resp) {
		p.exhausted = true
		return nil
	}
	p.start = p.after(resp)
	if len(p.skip) > 0 {
		return p.enterGapMode(ctx)
	}
	return nil
}

// enterGapMode splits what is left to read into the gaps between the skip
// names' keys and reads the first keys of every gap, fanOut at a time.
func (p *pendingNames) enterGapMode(ctx context.Context) error {
	p.gapMode = true
	end := p.end()
	lows := make([]string, len(p.skip))
	for i, n := range p.skip {
		lows[i] = p.in.layout.NameOpsPrefix(n)
	}
	slices.Sort(lows)
	cur := p.start
	for _, lo := range lows {
		hi := keyspace.PrefixEnd(lo)
		if hi <= cur {
			continue
		}
		if lo >= end {
			break
		}
		if lo > cur {
			p.gaps = append(p.gaps, gap{start: cur, end: lo})
		}
		cur = hi
	}
	if cur < end {
		p.gaps = append(p.gaps, gap{start: cur, end: end})
	}
	return forEach(ctx, len(p.gaps), func(ctx context.Context, i int) error {
		resp, err := p.get(ctx, p.gaps[i].start, p.gaps[i].end)
		p.gaps[i].read = resp
		return err
	})
}

// readGap queues the names of the next read of the first gap left.
func (p *pendingNames) readGap(ctx context.Context) error {
	if len(p.gaps) == 0 {
		p.exhausted = true
		return nil
	}
	g := &p.gaps[0]
	resp := g.read
	if resp == nil {
		var err error
		if resp, err = p.get(ctx, g.start, g.end); err != nil {
			return err
		}
	}
	g.read = nil
	if p.queueNames(resp) {
		g.start = p.after(resp)
	} else {
		p.gaps = p.gaps[1:]
	}
	return nil
}

// get reads the first pendingNamesRead keys of [start, end), keys only.
func (p *pendingNames) get(ctx context.Context, start, end string) (*clientv3.GetResponse, error) {
	resp, err := p.in.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(pendingNamesRead))
	if err != nil {
		return nil, fmt.Errorf("inspect: read pending names: %w", err)
	}
	return resp, nil
}

// queueNames queues the names of resp's keys and reports whether keys
// follow them.
func (p *pendingNames) queueNames(resp *clientv3.GetResponse) bool {
	prefix := p.in.layout.OpsPrefix()
	last := ""
	for _, kv := range resp.Kvs {
		// A key with no name segment is not a batch's: nothing to list.
		if name, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/"); ok && name != "" && name != last {
			p.queue = append(p.queue, name)
			last = name
		}
	}
	return resp.More && len(resp.Kvs) > 0
}

// after is where the read after resp starts: past the keys of the last
// name it met.
func (p *pendingNames) after(resp *clientv3.GetResponse) string {
	lastKey := string(resp.Kvs[len(resp.Kvs)-1].Key)
	name, _, ok := strings.Cut(strings.TrimPrefix(lastKey, p.in.layout.OpsPrefix()), "/")
	if next := keyspace.PrefixEnd(p.in.layout.NameOpsPrefix(name)); ok && name != "" && next > lastKey {
		return next
	}
	return etcdscan.After(lastKey)
}

// hasPending reports whether name has a key under the ops range.
func (in *Inspector) hasPending(ctx context.Context, name string) (bool, error) {
	p := in.layout.NameOpsPrefix(name)
	resp, err := in.cli.Get(ctx, p, clientv3.WithRange(keyspace.PrefixEnd(p)), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return false, fmt.Errorf("inspect: read pending of %q: %w", name, err)
	}
	return len(resp.Kvs) > 0, nil
}
