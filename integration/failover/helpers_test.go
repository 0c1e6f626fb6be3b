package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// seqValue is the value of the seq-th operation on key, e.g. "k3:17". Every
// key is written by one goroutine, one submission after the other, so the
// sequence number of a key grows with its tokens.
func seqValue(key string, seq int) string { return key + ":" + strconv.Itoa(seq) }

// parseSeq returns the sequence number of a value written with seqValue.
func parseSeq(key string, v []byte) (int, error) {
	rest, ok := strings.CutPrefix(string(v), key+":")
	if !ok {
		return 0, fmt.Errorf("value %q of %q is not %q:<seq>", v, key, key)
	}
	return strconv.Atoi(rest)
}

// observe reads the leader and term of the namespace.
func observe(t testing.TB, cli *clientv3.Client, layout keyspace.Layout) election.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := election.Observe(ctx, cli, layout)
	if err != nil {
		t.Fatalf("observe election: %v", err)
	}
	return st
}

// waitLeader waits until the election shows leader as the leader and the
// holder of the latest term (a winner takes its term just after winning),
// and returns the status seen then.
func waitLeader(t testing.TB, cli *clientv3.Client, layout keyspace.Layout, leader string, timeout time.Duration) election.Status {
	t.Helper()
	var st election.Status
	testenv.Eventually(t, timeout, func() bool {
		st = observe(t, cli, layout)
		return st.Leader == leader && st.TermHolder == leader
	}, "%s never became leader (last seen %+v)", leader, &st)
	return st
}

// campaign is one election key: a node campaigning or leading.
type campaign struct {
	Key    string
	NodeID string
	Lease  clientv3.LeaseID
}

// campaigns lists the election keys, oldest (the leader) first.
func campaigns(t testing.TB, cli *clientv3.Client, layout keyspace.Layout) []campaign {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, layout.Election(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatalf("read election keys: %v", err)
	}
	var out []campaign
	for _, kv := range resp.Kvs {
		var info election.LeaderInfo
		if err := json.Unmarshal(kv.Value, &info); err != nil {
			t.Fatalf("election key %q holds %q: %v", kv.Key, kv.Value, err)
		}
		out = append(out, campaign{Key: string(kv.Key), NodeID: info.NodeID, Lease: clientv3.LeaseID(kv.Lease)})
	}
	return out
}

// campaignOf returns the election key of nodeID; it fails the test when the
// node has none.
func campaignOf(t testing.TB, cli *clientv3.Client, layout keyspace.Layout, nodeID string) campaign {
	t.Helper()
	for _, c := range campaigns(t, cli, layout) {
		if c.NodeID == nodeID {
			return c
		}
	}
	t.Fatalf("node %s has no election key", nodeID)
	return campaign{}
}

// holdElectionLease keeps node nodeID's election lease alive from the test,
// so that its election key outlives the node, until release is called or
// the test ends. It returns the node's campaign.
func holdElectionLease(ctx context.Context, t testing.TB, cli *clientv3.Client, layout keyspace.Layout, nodeID string) (camp campaign, release func()) {
	t.Helper()
	camp = campaignOf(t, cli, layout, nodeID)
	kaCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	ka, err := cli.KeepAlive(kaCtx, camp.Lease)
	if err != nil {
		stop()
		t.Fatalf("keep the election lease of %s alive: %v", nodeID, err)
	}
	go func() {
		for range ka {
		}
	}()
	return camp, stop
}

// waitCampaigning waits until every node in ids has an election key, that
// is, stands ready to take over.
func waitCampaigning(t testing.TB, cli *clientv3.Client, layout keyspace.Layout, timeout time.Duration, ids ...string) {
	t.Helper()
	testenv.Eventually(t, timeout, func() bool {
		have := map[string]bool{}
		for _, c := range campaigns(t, cli, layout) {
			have[c.NodeID] = true
		}
		for _, id := range ids {
			if !have[id] {
				return false
			}
		}
		return true
	}, "nodes %v never all campaigned", ids)
}

// submission is one accepted set of a stream.
type submission struct {
	Key string
	Seq int
	Tok client.Token
}

// stream submits sets from several goroutines through one caller. Each
// goroutine owns its keys and submits one set after the other, so per key
// the sequence number and the token grow together.
type stream struct {
	t      testing.TB
	caller *client.Caller
	keys   []string
	stop   chan struct{}
	wg     sync.WaitGroup
	count  atomic.Int64

	mu   sync.Mutex
	subs []submission
}

// startStream starts workers goroutines with keysPerWorker keys each
// (prefix+"0", prefix+"1", ...). Each worker paces itself with a short
// ticker so the stream does not starve the nodes on a small machine.
func startStream(t testing.TB, caller *client.Caller, prefix string, workers, keysPerWorker int) *stream {
	t.Helper()
	s := &stream{t: t, caller: caller, stop: make(chan struct{})}
	for w := range workers {
		keys := make([]string, keysPerWorker)
		for i := range keys {
			keys[i] = prefix + strconv.Itoa(w*keysPerWorker+i)
		}
		s.keys = append(s.keys, keys...)
		s.wg.Add(1)
		go s.work(keys)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *stream) work(keys []string) {
	defer s.wg.Done()
	seq := make(map[string]int, len(keys))
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		key := keys[i%len(keys)]
		seq[key]++
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		tok, err := s.caller.Set(ctx, key, []byte(seqValue(key, seq[key])), 0)
		cancel()
		if err != nil {
			// etcd stays up in these tests and the caller stays current:
			// every submission must be accepted.
			s.t.Errorf("submit %s: %v", seqValue(key, seq[key]), err)
			return
		}
		s.mu.Lock()
		s.subs = append(s.subs, submission{Key: key, Seq: seq[key], Tok: tok})
		s.mu.Unlock()
		s.count.Add(1)
	}
}

// Keys are the keys the stream writes.
func (s *stream) Keys() []string { return s.keys }

// Count is the number of accepted submissions so far.
func (s *stream) Count() int64 { return s.count.Load() }

// WaitMore waits until n more submissions than now were accepted.
func (s *stream) WaitMore(n int64, timeout time.Duration) {
	s.t.Helper()
	target := s.Count() + n
	testenv.Eventually(s.t, timeout, func() bool { return s.Count() >= target },
		"the stream did not reach %d submissions", target)
}

// Stop stops the workers and waits for them; it may be called twice.
func (s *stream) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// Submissions returns every accepted submission; call after Stop.
func (s *stream) Submissions() []submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]submission(nil), s.subs...)
}

// submitGap sets each of n keys prefix+"0", prefix+"1", ... once and
// returns the submissions. Submitted while no node leads, these operations
// can only reach memcached through the next leader's replay: they are not
// overwritten later, so losing them in the replay shows in the final state.
func submitGap(t testing.TB, caller *client.Caller, prefix string, n int) []submission {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []submission
	for _, key := range keyNames(prefix, n) {
		tok, err := caller.Set(ctx, key, []byte(seqValue(key, 1)), 0)
		if err != nil {
			t.Fatalf("submit %s: %v", seqValue(key, 1), err)
		}
		out = append(out, submission{Key: key, Seq: 1, Tok: tok})
	}
	return out
}

// keyNames returns prefix+"0" ... prefix+(n-1).
func keyNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// maxToken is the highest token of subs.
func maxToken(subs []submission) client.Token {
	var m client.Token
	for _, s := range subs {
		if m.Less(s.Tok) {
			m = s.Tok
		}
	}
	return m
}

// newestPerKey returns, for each key, the submission with the highest token,
// after checking that per key the tokens grow with the sequence numbers (the
// premise of the sequence checks).
func newestPerKey(t testing.TB, subs []submission) map[string]submission {
	t.Helper()
	byKey := map[string][]submission{}
	for _, s := range subs {
		byKey[s.Key] = append(byKey[s.Key], s)
	}
	out := map[string]submission{}
	for key, ss := range byKey {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Seq < ss[j].Seq })
		for i := 1; i < len(ss); i++ {
			if !ss[i-1].Tok.Less(ss[i].Tok) {
				t.Fatalf("%s: seq %d has token %s, seq %d has token %s", key, ss[i-1].Seq, ss[i-1].Tok, ss[i].Seq, ss[i].Tok)
			}
		}
		out[key] = ss[len(ss)-1]
	}
	return out
}

// checkAllApplied waits until the highest token of subs is applied, then
// checks that the watermark covers every token and that each key's value in
// memcached is the value of its highest-token submission: the state a
// token-ordered application leaves, with nothing lost or applied twice in
// effect.
func checkAllApplied(t testing.TB, c *client.Client, mcAddr string, subs []submission, timeout time.Duration) {
	t.Helper()
	if len(subs) == 0 {
		t.Fatal("no submissions")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	top := maxToken(subs)
	if err := c.WaitApplied(ctx, top); err != nil {
		t.Fatalf("token %s (the highest of %d) was not applied within %s: %v", top, len(subs), timeout, err)
	}
	wm, _, err := tokenseq.Watermark(ctx, c.Etcd(), c.Layout())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if wm.Less(s.Tok) {
			t.Errorf("token %s of %s is above the watermark %s", s.Tok, seqValue(s.Key, s.Seq), wm)
		}
	}
	mc := memcache.New(mcAddr)
	for key, s := range newestPerKey(t, subs) {
		it, err := mc.Get(key)
		if err != nil {
			t.Errorf("memcached %s: %v (want %q)", key, err, seqValue(key, s.Seq))
			continue
		}
		if got, want := string(it.Value), seqValue(key, s.Seq); got != want {
			t.Errorf("memcached %s = %q, want %q (token %s)", key, got, want, s.Tok)
		}
	}
}

// reader polls memcached the whole time a test runs, as any outside reader
// would, and records every time a key goes back: a lower sequence number, a
// lower term in the item flags, or a key that disappears. Keys listed as
// forbidden must never be seen at all.
type reader struct {
	t         testing.TB
	mc        *memcache.Client
	keys      []string
	forbidden map[string]bool
	stop      chan struct{}
	done      chan struct{}
	polls     atomic.Int64

	mu         sync.Mutex
	last       map[string]*memcache.Item
	lastSeq    map[string]int
	violations []string
	errs       int
}

// startReader starts polling keys and forbidden at addr.
func startReader(t testing.TB, addr string, keys, forbidden []string) *reader {
	t.Helper()
	r := &reader{
		t: t, mc: memcache.New(addr), keys: append(append([]string(nil), keys...), forbidden...),
		forbidden: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{}),
		last: map[string]*memcache.Item{}, lastSeq: map[string]int{},
	}
	for _, k := range forbidden {
		r.forbidden[k] = true
	}
	go r.run()
	t.Cleanup(func() { r.Stop() })
	return r
}

func (r *reader) run() {
	defer close(r.done)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		items, err := r.mc.GetMulti(r.keys)
		r.mu.Lock()
		if err != nil {
			r.errs++
		} else {
			r.check(items)
		}
		r.mu.Unlock()
		if err == nil {
			r.polls.Add(1)
		}
	}
}

func (r *reader) violate(format string, args ...any) {
	if len(r.violations) < 50 {
		r.violations = append(r.violations, fmt.Sprintf(format, args...))
	}
}

func (r *reader) check(items map[string]*memcache.Item) {
	for _, key := range r.keys {
		it, ok := items[key]
		if r.forbidden[key] {
			if ok {
				r.violate("forbidden key %s holds %q", key, it.Value)
			}
			continue
		}
		prev := r.last[key]
		if !ok {
			if prev != nil {
				r.violate("%s disappeared after holding %q (term %d)", key, prev.Value, prev.Flags)
			}
			continue
		}
		seq, err := parseSeq(key, it.Value)
		if err != nil {
			r.violate("%v", err)
			continue
		}
		if prev != nil {
			if seq < r.lastSeq[key] {
				r.violate("%s went back from %q (term %d) to %q (term %d)", key, prev.Value, prev.Flags, it.Value, it.Flags)
			}
			if it.Flags < prev.Flags {
				r.violate("%s went back from term %d (%q) to term %d (%q)", key, prev.Flags, prev.Value, it.Flags, it.Value)
			}
		}
		r.last[key], r.lastSeq[key] = it, seq
	}
}

// Sync waits until the reader has completed two more polls than now, so
// the state of memcached at the time of the call has been checked.
func (r *reader) Sync(timeout time.Duration) {
	r.t.Helper()
	target := r.polls.Load() + 2
	testenv.Eventually(r.t, timeout, func() bool { return r.polls.Load() >= target }, "the memcached reader stalled")
}

// Stop stops the reader and reports what it saw; it may be called twice.
func (r *reader) Stop() {
	select {
	case <-r.stop:
		<-r.done
		return
	default:
		close(r.stop)
	}
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	r.t.Logf("memcached reader: %d polls, %d failed polls, %d violations", r.polls.Load(), r.errs, len(r.violations))
	for _, v := range r.violations {
		r.t.Errorf("reader saw a value go back: %s", v)
	}
}

// logCapture is a slog handler that keeps every record (message and
// attributes) so a test can wait for a node's log events; it forwards to
// next as well.
type logCapture struct {
	store *logStore
	attrs []slog.Attr
	next  slog.Handler
}

type logStore struct {
	mu      sync.Mutex
	records []logRecord
}

// logRecord is one captured log record.
type logRecord struct {
	Msg   string
	Attrs map[string]string
}

func newLogCapture(next slog.Handler) *logCapture {
	return &logCapture{store: &logStore{}, next: next}
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }

func (h *logCapture) Handle(ctx context.Context, rec slog.Record) error {
	lr := logRecord{Msg: rec.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		lr.Attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		lr.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.store.mu.Lock()
	h.store.records = append(h.store.records, lr)
	h.store.mu.Unlock()
	if h.next.Enabled(ctx, rec.Level) {
		return h.next.Handle(ctx, rec)
	}
	return nil
}

func (h *logCapture) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logCapture{store: h.store, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...), next: h.next.WithAttrs(attrs)}
}

func (h *logCapture) WithGroup(name string) slog.Handler {
	return &logCapture{store: h.store, attrs: h.attrs, next: h.next.WithGroup(name)}
}

// Records returns the records with message msg.
func (h *logCapture) Records(msg string) []logRecord {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	var out []logRecord
	for _, r := range h.store.records {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}
