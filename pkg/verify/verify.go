// Package verify compares what memcached holds with what the leader
// applied, key by key, and reports each key as ok, missing, stale or
// misplaced, and the stray copies of keys on servers that should not hold
// them.
//
// The keys, and what each should hold, come from one of three sources:
//
//   - SourceRecord, restore's record (node.Config.RestoreOnRestart): every
//     key's latest value, term and expiry. The natural source: a record is
//     never older than what memcached holds of its key.
//   - SourceHistory, the batches etcd still keeps in its history (applied
//     ones until etcd compacts them, and pending ones): for each key the
//     newest applied operation, a value or a delete. etcd keeps no time of
//     a write, so a missing key whose newest set had a lifetime counts as
//     expired, and no term is compared.
//   - SourceKeys, a list of keys: each is checked against its record when
//     there is one, and only for its placement otherwise.
//
// Each key is read from every server of the applied topology (the one the
// leaders write with, which readers use once it is applied): the server the
// ring names holds the key's item; any other holding it has a stray copy,
// or the only copy when the key is misplaced. A key found on the wrong
// server or stale is read again, its record too, before it is reported, so
// a write the leader made meanwhile is not taken for a fault.
package verify

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/restore"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// Errors of the package.
var (
	// ErrInconsistent is Report.Err's error for a report that is not
	// clean.
	ErrInconsistent = errors.New("verify: memcached differs from the applied state")
	// ErrNoKeys means the source named no key: with SourceRecord, the
	// namespace keeps no record (its nodes run without
	// --restore-on-restart); use SourceHistory or a list of keys.
	ErrNoKeys = errors.New("verify: the source names no key")
	// ErrBadKey means a key of the list is one memcached cannot hold
	// (empty, longer than 250 bytes, or holding a space or a control
	// character).
	ErrBadKey = errors.New("verify: not a memcached key")
)

// Source is where Run takes the keys it checks; see the package
// documentation.
type Source string

// The sources.
const (
	SourceRecord  Source = "record"
	SourceHistory Source = "history"
	SourceKeys    Source = "keys"
)

// Status is what a key's check found.
type Status string

// The statuses.
const (
	// StatusOK: the server the topology names holds the key's latest
	// value (or a newer term's), or nothing after a delete.
	StatusOK Status = "ok"
	// StatusMissing: no server holds the key; see Cause.
	StatusMissing Status = "missing"
	// StatusStale: the server the topology names holds an older term or
	// another value than the last applied write, or a deleted key.
	StatusStale Status = "stale"
	// StatusMisplaced: the key is only on servers the topology does not
	// name for it (KeyResult.Strays), where readers do not look.
	StatusMisplaced Status = "misplaced"
)

// Cause is why a key is missing, as far as memcached's stats tell.
type Cause string

// The causes.
const (
	// CauseExpired: its lifetime has passed (SourceRecord's expiry), or
	// its newest set had one (SourceHistory, which has no write time).
	// Not a fault.
	CauseExpired Cause = "expired"
	// CauseEvicted: its server evicted items since it started (stats
	// "evictions"), this one most likely among them.
	CauseEvicted Cause = "evicted"
	// CauseLost: its server evicted nothing; the item went with a restart
	// (its uptime is in Report.Servers), a flush, or a delete made outside
	// the coordinator.
	CauseLost Cause = "lost"
)

// Defaults of Config.
const (
	// DefaultRate is how many keys a second Run checks (each read from
	// every server).
	DefaultRate = 10000
	// DefaultTimeout bounds each read of a server.
	DefaultTimeout = 2 * time.Second
	// DefaultProgressInterval is how often Config.Progress is called.
	DefaultProgressInterval = time.Second
	// DefaultMaxProblems bounds Report.Problems.
	DefaultMaxProblems = 1000
)

// chunkKeys is how many keys one read of a server asks for.
const chunkKeys = 100

// Config configures Run. Zero values mean the defaults noted.
type Config struct {
	// Etcd reaches the namespace's etcd; required.
	Etcd *clientv3.Client
	// Layout is the namespace's layout; required.
	Layout keyspace.Layout
	// Source is where the keys come from; "" means SourceKeys when Keys
	// is set and SourceRecord otherwise.
	Source Source
	// Keys are the keys of SourceKeys; set only with it.
	Keys []string
	// Rate is how many keys a second are checked; zero means
	// DefaultRate. Ignored when Unpaced.
	Rate float64
	// Unpaced checks keys as fast as the servers answer.
	Unpaced bool
	// Timeout bounds each read of a server; zero means DefaultTimeout.
	Timeout time.Duration
	// Progress, when set, is called every ProgressInterval while keys are
	// checked, from Run's goroutine.
	Progress func(Progress)
	// ProgressInterval is how often Progress is called; zero means
	// DefaultProgressInterval.
	ProgressInterval time.Duration
	// MaxProblems bounds the keys listed in Report.Problems (the counts
	// cover every key); zero means DefaultMaxProblems.
	MaxProblems int
	// Now is the clock expiries are compared with; nil means time.Now.
	Now func() time.Time
}

// Validate checks the config; its errors are *config.FieldError (a key of
// Keys memcached cannot hold also matches ErrBadKey).
func (c *Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("verify", "Etcd", "is nil")
	case c.Layout.Prefix() == "":
		return config.Errorf("verify", "Layout", "is the zero layout: use keyspace.New")
	case c.Rate < 0:
		return config.Errorf("verify", "Rate", "%g is negative", c.Rate)
	case c.Timeout < 0:
		return config.Errorf("verify", "Timeout", "%s is negative", c.Timeout)
	case c.ProgressInterval < 0:
		return config.Errorf("verify", "ProgressInterval", "%s is negative", c.ProgressInterval)
	case c.MaxProblems < 0:
		return config.Errorf("verify", "MaxProblems", "%d is negative", c.MaxProblems)
	}
	switch c.source() {
	case SourceRecord, SourceHistory:
		if len(c.Keys) > 0 {
			return config.Errorf("verify", "Keys", "set with Source %q: keys come from one source", c.source())
		}
	case SourceKeys:
		for i, k := range c.Keys {
			if !legalKey(k) {
				return config.Errorf("verify", "Keys", "key %d (%q): %w", i+1, k, ErrBadKey)
			}
		}
	default:
		return config.Errorf("verify", "Source", "%q is none of record, history, keys", c.Source)
	}
	return nil
}

func (c *Config) source() Source {
	switch {
	case c.Source != "":
		return c.Source
	case len(c.Keys) > 0:
		return SourceKeys
	}
	return SourceRecord
}

func (c Config) withDefaults() Config {
	c.Source = c.source()
	c.Rate = cmp.Or(c.Rate, DefaultRate)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.ProgressInterval = cmp.Or(c.ProgressInterval, DefaultProgressInterval)
	c.MaxProblems = cmp.Or(c.MaxProblems, DefaultMaxProblems)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// legalKey is memcached's rule for a key of the text protocol.
func legalKey(k string) bool {
	if k == "" || len(k) > 250 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			return false
		}
	}
	return true
}

// want is what a key should hold.
type want struct {
	known   bool   // the source says what the key holds; placement only otherwise
	present bool   // false: deleted
	value   []byte // the value of a set
	term    uint32 // 0: not compared
	expires int64  // unix seconds; the record's expiry
	expired bool   // the key may have expired (SourceHistory)
}

// Run checks the keys of cfg's source against the namespace's applied
// topology and returns what it found. Its error is a *config.FieldError
// for an invalid cfg, wraps topology.ErrNotFound on a namespace without a
// topology, matches ErrNoKeys when the source names no key, and is
// otherwise a failure to read etcd or a server; a report that is not clean
// is not an error of Run (see Report.Err).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t, changing, err := appliedTopology(ctx, cfg.Etcd, cfg.Layout)
	if err != nil {
		return nil, err
	}
	ring, err := hashring.New(t.Ring())
	if err != nil {
		return nil, fmt.Errorf("verify: topology %s: %w", t, err)
	}
	v := &verifier{cfg: cfg, ring: ring, addrs: make([]string, 0, len(t.Servers))}
	for _, s := range ring.Servers() {
		v.addrs = append(v.addrs, s.Addr)
		mc := memcache.New(s.Addr)
		mc.Timeout, mc.MaxIdleConns = cfg.Timeout, 2
		v.clients = append(v.clients, mc)
	}
	defer func() {
		for _, mc := range v.clients {
			_ = mc.Close()
		}
	}()
	rep := &Report{Source: cfg.Source, Topology: t.String(), Epoch: t.Epoch, Changing: changing, Problems: []KeyResult{}}
	if rep.Servers, err = v.serverInfo(ctx); err != nil {
		return nil, err
	}
	keys, wants, pending, err := v.collect(ctx)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if cfg.Source == SourceRecord {
			return nil, fmt.Errorf("%w: no record under %s (do the nodes run with --restore-on-restart?); check the keys of etcd's history or a list of keys", ErrNoKeys, cfg.Layout.MemcachedValuesPrefix())
		}
		return nil, fmt.Errorf("%w (source %s)", ErrNoKeys, cfg.Source)
	}
	rep.Pending = pending
	rep.Keys = len(keys)
	if err := v.check(ctx, rep, keys, wants); err != nil {
		return nil, err
	}
	return rep, nil
}

// appliedTopology is the topology the leaders write with: the applied one,
// or the namespace's topology where no leader recorded one.
func appliedTopology(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) (topology.Topology, bool, error) {
	a, found, err := topology.ReadApplied(ctx, cli, l)
	if err != nil {
		return topology.Topology{}, false, err
	}
	if found {
		return a.Applied, a.To != nil, nil
	}
	t, err := topology.Get(ctx, cli, l)
	return t, false, err
}

type verifier struct {
	cfg     Config
	ring    *hashring.Ring
	addrs   []string
	clients []*memcache.Client
	// evicted is, by server, whether it evicted anything (serverInfo).
	evicted map[string]bool
}

// serverInfo reads every server's stats.
func (v *verifier) serverInfo(ctx context.Context) ([]ServerInfo, error) {
	mw, err := memfence.New(memfence.Config{Selector: v.ring, Timeout: v.cfg.Timeout})
	if err != nil {
		return nil, err
	}
	defer mw.Close()
	stats, err := mw.ServerStats(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	v.evicted = make(map[string]bool)
	out := make([]ServerInfo, 0, len(stats))
	for i, st := range stats {
		addr := st.Addr
		if i < len(v.addrs) {
			addr = v.addrs[i] // as the topology spells it
		}
		v.evicted[addr] = st.Evictions > 0
		out = append(out, ServerInfo{Addr: addr, Uptime: int64(st.Uptime / time.Second), Items: st.CurrItems, Evictions: st.Evictions})
	}
	return out, nil
}

// collect returns the keys to check, in order, and what each should hold.
func (v *verifier) collect(ctx context.Context) ([]string, map[string]want, int, error) {
	switch v.cfg.Source {
	case SourceHistory:
		return v.fromHistory(ctx)
	case SourceKeys:
		keys := slices.Clone(v.cfg.Keys)
		slices.Sort(keys)
		keys = slices.Compact(keys)
		return keys, nil, 0, nil // looked up chunk by chunk
	}
	wants := make(map[string]want)
	var keys []string
	prefix := v.cfg.Layout.MemcachedValuesPrefix()
	_, err := etcdscan.Prefix(ctx, v.cfg.Etcd, prefix, etcdscan.DefaultPageSize, func(page []*mvccpb.KeyValue) error {
		for _, kv := range page {
			key := strings.TrimPrefix(string(kv.Key), prefix)
			w, ok := recordWant(kv.Value)
			if !ok || !legalKey(key) {
				continue
			}
			keys = append(keys, key)
			wants[key] = w
		}
		return nil
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("verify: read records: %w", err)
	}
	return keys, wants, 0, nil
}

func recordWant(b []byte) (want, bool) {
	var r restore.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return want{}, false
	}
	return want{known: true, present: true, value: r.Value, term: r.Term, expires: r.Expires}, true
}

// records reads the records of keys; a key without one is absent from
// the map.
func (v *verifier) records(ctx context.Context, keys []string) (map[string]want, error) {
	out := make(map[string]want, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), 100) // within etcd's default --max-txn-ops
		gets := make([]clientv3.Op, n)
		for i, k := range keys[:n] {
			gets[i] = clientv3.OpGet(v.cfg.Layout.MemcachedValue(k))
		}
		resp, err := v.cfg.Etcd.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return nil, fmt.Errorf("verify: read records: %w", err)
		}
		for i, r := range resp.Responses {
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				if w, ok := recordWant(kvs[0].Value); ok {
					out[keys[i]] = w
				}
			}
		}
		keys = keys[n:]
	}
	return out, nil
}

// check reads keys, a chunk at a time paced by the rate, and adds each
// finding to rep.
func (v *verifier) check(ctx context.Context, rep *Report, keys []string, wants map[string]want) error {
	chunk := chunkKeys
	var lim *rate.Limiter
	if !v.cfg.Unpaced {
		chunk = max(1, min(chunk, int(v.cfg.Rate)))
		lim = rate.NewLimiter(rate.Limit(v.cfg.Rate), chunk)
	}
	start := time.Now()
	lastProgress := start
	problems := 0
	for i := 0; i < len(keys); i += chunk {
		part := keys[i:min(i+chunk, len(keys))]
		if lim != nil {
			if err := lim.WaitN(ctx, len(part)); err != nil {
				return err
			}
		}
		w := wants
		if v.cfg.Source == SourceKeys {
			var err error
			if w, err = v.records(ctx, part); err != nil {
				return err
			}
		}
		results, err := v.checkChunk(ctx, part, w)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.problem() {
				problems++
			}
			rep.add(r, v.cfg.MaxProblems)
		}
		if p := v.cfg.Progress; p != nil && time.Since(lastProgress) >= v.cfg.ProgressInterval {
			lastProgress = time.Now()
			p(Progress{Checked: i + len(part), Total: len(keys), Problems: problems, Elapsed: time.Since(start)})
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	if rep.Seconds > 0 {
		rep.KeysPerSecond = float64(len(keys)) / rep.Seconds
	}
	return nil
}

// checkChunk checks keys; a key whose finding is a fault is read again,
// with its record, so that a write made while it was read is not taken for
// one.
func (v *verifier) checkChunk(ctx context.Context, keys []string, wants map[string]want) ([]KeyResult, error) {
	items, err := v.read(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]KeyResult, len(keys))
	var again []int
	for i, k := range keys {
		out[i] = v.judge(k, wants[k], items)
		if out[i].problem() && v.cfg.Source != SourceHistory {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return out, nil
	}
	ks := make([]string, len(again))
	for j, i := range again {
		ks[j] = keys[i]
	}
	fresh, err := v.records(ctx, ks)
	if err != nil {
		return nil, err
	}
	items, err = v.read(ctx, ks)
	if err != nil {
		return nil, err
	}
	for j, i := range again {
		w, ok := fresh[ks[j]]
		if !ok && v.cfg.Source == SourceRecord {
			// The record is gone: the key was deleted meanwhile.
			w = want{known: true}
		}
		out[i] = v.judge(ks[j], w, items)
	}
	return out, nil
}

// read reads keys from every server at once: items[s][key] is server s's
// item.
func (v *verifier) read(ctx context.Context, keys []string) ([]map[string]*memcache.Item, error) {
	items := make([]map[string]*memcache.Item, len(v.clients))
	errs := make([]error, len(v.clients))
	var wg sync.WaitGroup
	for s, mc := range v.clients {
		wg.Go(func() {
			if err := ctx.Err(); err != nil {
				errs[s] = err
				return
			}
			m, err := mc.GetMulti(keys)
			if err != nil {
				errs[s] = fmt.Errorf("verify: read %s: %w", v.addrs[s], err)
			}
			items[s] = m
		})
	}
	wg.Wait()
	return items, errors.Join(errs...)
}

// judge tells what key's items (by server) say against w.
func (v *verifier) judge(key string, w want, items []map[string]*memcache.Item) KeyResult {
	own := v.ring.Index(key)
	r := KeyResult{Key: key, Server: v.addrs[own], WantTerm: w.term}
	for s, m := range items {
		if _, ok := m[key]; ok && s != own {
			r.Strays = append(r.Strays, v.addrs[s])
		}
	}
	it := items[own][key]
	if it == nil {
		switch {
		case len(r.Strays) > 0:
			r.Status = StatusMisplaced
		case w.known && !w.present:
			r.Status = StatusOK
		default:
			r.Status, r.Cause = StatusMissing, v.cause(r.Server, w)
		}
		return r
	}
	r.Term = memfence.TermOf(it.Flags)
	r.Status = StatusOK
	switch {
	case !w.known:
	case !w.present:
		r.Status, r.Detail = StatusStale, "present after its delete"
	case w.term != 0 && r.Term > w.term:
		// A newer leader wrote it; its record follows before its round
		// commits.
	case w.term != 0 && r.Term < w.term:
		r.Status, r.Detail = StatusStale, fmt.Sprintf("term %d, not %d", r.Term, w.term)
	case !bytes.Equal(it.Value, w.value):
		r.Status, r.Detail = StatusStale, fmt.Sprintf("another value (%d bytes, not %d)", len(it.Value), len(w.value))
	}
	return r
}

// cause tells why a key that should be on server is missing.
func (v *verifier) cause(server string, w want) Cause {
	switch {
	case w.expired || (w.expires != 0 && w.expires <= v.cfg.Now().Unix()):
		return CauseExpired
	case v.evicted[server]:
		return CauseEvicted
	}
	return CauseLost
}
