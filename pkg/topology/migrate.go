package topology

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// Moving keys on a change of topology.
//
// A leader takes a change of topology from From (the applied topology:
// every key was written to its From owner) to To between rounds: it writes
// nothing else meanwhile. Migrate records the change as under way (Applied
// with To) and gathers the keys:
//
//   - with MigrateConfig.Records (the node keeps restore's record), every
//     key of the record, which holds each key the leader wrote and did not
//     delete since; the servers are listed once more, to find copies left
//     on servers that do not own their key;
//   - without it, from the servers' listings (memfence.Writer.ListAgreed):
//     each server is listed until a listing holds as many keys as the
//     server counts items. A listing walks memcached's LRU crawler, which
//     may leave out items moved while it walks; a server whose listings
//     never agree is reported (MigrateResult.ListingShort).
//
// Then, for each key K, with owners oF (From's) and oT (To's), read from
// the servers themselves rather than taken from a listing:
//
//  1. Clean (once per change, recorded as Applied.Cleaned): when oF ≠ oT
//     and oF does not hold K, a copy of K on oT is left from an earlier
//     topology (A→B→A: K moved away from oT, was deleted or expired on its
//     owner since, and the old copy was never removed), so it is deleted,
//     fenced by the leader's term. Left there, a reader of To would see a
//     value older than the delete.
//  2. Move: when oF ≠ oT and oF holds K, K is copied to oT with its value,
//     expiry and term, fenced by that term: a copy on oT with a newer term
//     wins (it was written by a newer leader), one with the same or an
//     older term is overwritten (it is an earlier topology's, or this
//     change's own copy made before a crash). The copy is read back from
//     oT; only once it is there is K deleted from oF, fenced by the
//     leader's term. Copy first, delete second: a reader of From finds K
//     on oF until the copy exists, and a reader of To finds it on oT from
//     then on; deleting first would make both miss in between, and a crash
//     in between would lose the value.
//  3. A copy of K listed on a server that is neither oF nor oT is read by
//     no reader of either topology: it is deleted.
//
// A key whose copy memcached refuses (an item over oT's -I, say), or
// whose copy is not found on oT when read back, stays on oF and is
// reported: in the result, the leader's log, memfence.Stats.UnmovedKeys
// and the change record (Applied.LastChange). Then Applied becomes To. A
// leader that takes over from one that crashed meanwhile finds To set and
// runs the same change again: each step is idempotent; clean is skipped
// once recorded, since after it every copy on an oT that oF lacks is one
// this change made (its oF copy was deleted after it was copied).
//
// Readers: one of To sees, for each key, a miss or the value From's owner
// held (or a newer one), never an older one; one of From sees the values
// until their keys are deleted, then misses. The leader writes nothing new
// until Applied is To, so values do not change during the change.
//
// A server only in From that does not answer is skipped (its keys are gone
// with it, and are misses for To's readers); one in To that does not
// answer fails the change, which the leader retries.

// DefaultListAttempts is how many times Migrate lists a server whose
// listing disagrees with its item count when MigrateConfig.ListAttempts is
// zero.
const DefaultListAttempts = 10

// MaxReportedUnmoved bounds the keys MigrateResult.Unmoved names.
const MaxReportedUnmoved = 100

// MigrateConfig configures Migrate. Zero values mean the defaults noted.
type MigrateConfig struct {
	// Etcd is the etcd client Applied is written with.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// Lead is the leadership the change is made under: its guard fences
	// the etcd writes, its term the memcached deletes, and every memcached
	// write is made only while it is valid.
	Lead *election.Leadership
	// From and To are the topologies keys move from and to.
	From, To Topology
	// Cleaned skips the clean step, done already for this change (see
	// Applied.Cleaned).
	Cleaned bool
	// Records takes the keys from restore's record under
	// keyspace.Layout.MemcachedValuesPrefix(), complete when the leaders
	// keep it (node.Config.RestoreOnRestart); without it the keys come from
	// the servers' listings.
	Records bool
	// ListAttempts bounds the listings of a server that disagree with its
	// item count (see memfence.Writer.ListAgreed); zero means
	// DefaultListAttempts. With Records each server is listed once.
	ListAttempts int
	// Timeout bounds each exchange with memcached; zero means
	// memfence.DefaultTimeout.
	Timeout time.Duration
	// Stats, when set, counts the keys moved and the keys that could not
	// be.
	Stats *memfence.Stats
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Validate checks the config; its errors are *config.FieldError.
func (c *MigrateConfig) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("topology", "Etcd", "is nil")
	case c.Lead == nil:
		return config.Errorf("topology", "Lead", "is nil")
	case c.Lead.Term > memfence.MaxTerm:
		return config.Errorf("topology", "Lead", "term %d: %w", c.Lead.Term, memfence.ErrTermExhausted)
	case c.ListAttempts < 0:
		return config.Errorf("topology", "ListAttempts", "%d is negative", c.ListAttempts)
	case c.Timeout < 0:
		return config.Errorf("topology", "Timeout", "%s is negative", c.Timeout)
	}
	if err := c.From.Validate(); err != nil {
		return err
	}
	return c.To.Validate()
}

// MigrateResult is what Migrate did; the change record keeps the last one
// (Applied.LastChange).
type MigrateResult struct {
	// FromEpoch and ToEpoch are the epochs of the topologies.
	FromEpoch uint64 `json:"from_epoch"`
	ToEpoch   uint64 `json:"to_epoch"`
	// Term is the term of the leader that made the change.
	Term uint64 `json:"term"`
	// Finished is when the change was recorded as applied.
	Finished time.Time `json:"finished"`
	// Recorded counts the keys of restore's record (with Records).
	Recorded int `json:"recorded"`
	// Listed counts the keys listed on the servers (a key listed on two
	// servers counts twice).
	Listed int `json:"listed"`
	// Moved counts the keys copied to their new server, read back there
	// and deleted from their old one.
	Moved int `json:"moved"`
	// Newer counts the keys whose new server held a newer term than the
	// old one's copy: that copy was deleted and not copied.
	Newer int `json:"newer"`
	// Cleaned counts the copies from earlier topologies deleted (steps 1
	// and 3).
	Cleaned int `json:"cleaned"`
	// Unreachable lists the servers only in From that did not answer.
	Unreachable []string `json:"unreachable,omitempty"`
	// ListingShort names the servers whose listings never held as many
	// keys as they counted items, with the counts: without Records, keys
	// of theirs may not have been moved.
	ListingShort []string `json:"listing_short,omitempty"`
	// UnmovedCount counts the keys that could not be moved; Unmoved names
	// the first MaxReportedUnmoved of them.
	UnmovedCount int       `json:"unmoved_count"`
	Unmoved      []Unmoved `json:"unmoved,omitempty"`
}

// Unmoved is a key a change of topology could not move: it stays on its
// old server, which readers of the new topology do not read.
type Unmoved struct {
	// Key is the key.
	Key string `json:"key"`
	// From and To are its old and new server.
	From string `json:"from"`
	To   string `json:"to"`
	// Reason says why.
	Reason string `json:"reason"`
}

// Migrate moves the keys of a change of topology from cfg.From to cfg.To
// (see above) and records To as applied, with the result as the change
// record. It returns election.ErrNotLeader once the leadership is no
// longer valid, and memcached's or etcd's errors, after which it may be
// called again with Cleaned as ReadApplied says.
func Migrate(ctx context.Context, cfg MigrateConfig) (MigrateResult, error) {
	res := MigrateResult{FromEpoch: cfg.From.Epoch, ToEpoch: cfg.To.Epoch}
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	res.Term = cfg.Lead.Term
	m := &mover{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()), term: uint32(cfg.Lead.Term), res: &res}
	to := cfg.To
	if err := writeApplied(ctx, cfg.Etcd, cfg.Layout, cfg.Lead.Guard(), Applied{Applied: cfg.From, To: &to, Cleaned: cfg.Cleaned}); err != nil {
		return res, err
	}
	var err error
	if m.from, err = hashring.New(cfg.From.Ring()); err != nil {
		return res, err
	}
	if m.dest, err = hashring.New(cfg.To.Ring()); err != nil {
		return res, err
	}
	defer m.close()
	if err := m.open(); err != nil {
		return res, err
	}
	if err := m.gather(ctx); err != nil {
		return res, err
	}
	keys := slices.Sorted(maps.Keys(m.keys))
	if !cfg.Cleaned {
		for _, k := range keys {
			if err := m.clean(ctx, k); err != nil {
				return res, err
			}
		}
		if err := writeApplied(ctx, cfg.Etcd, cfg.Layout, cfg.Lead.Guard(), Applied{Applied: cfg.From, To: &to, Cleaned: true}); err != nil {
			return res, err
		}
	}
	for _, k := range keys {
		if err := m.move(ctx, k); err != nil {
			return res, err
		}
	}
	res.Finished = time.Now().UTC().Truncate(time.Millisecond)
	if err := writeApplied(ctx, cfg.Etcd, cfg.Layout, cfg.Lead.Guard(), Applied{Applied: cfg.To, LastChange: &res}); err != nil {
		return res, err
	}
	return res, nil
}

// mover is one run of Migrate.
type mover struct {
	cfg        MigrateConfig
	log        *slog.Logger
	term       uint32
	res        *MigrateResult
	from, dest *hashring.Ring
	addrs      []string                    // every server of both topologies
	writers    map[string]*memfence.Writer // one per server, so each read and write goes where meant
	down       map[string]bool             // servers only in From that did not answer
	keys       map[string]map[string]bool  // key → the servers that listed it
}

// open makes a writer per server.
func (m *mover) open() error {
	for _, s := range slices.Concat(m.cfg.From.Servers, m.cfg.To.Servers) {
		if !slices.Contains(m.addrs, s.Addr) {
			m.addrs = append(m.addrs, s.Addr)
		}
	}
	m.writers = make(map[string]*memfence.Writer, len(m.addrs))
	m.down = make(map[string]bool)
	for _, a := range m.addrs {
		w, err := memfence.New(memfence.Config{Servers: []string{a}, Timeout: m.cfg.Timeout})
		if err != nil {
			return err
		}
		m.writers[a] = w
	}
	return nil
}

func (m *mover) close() {
	for _, w := range m.writers {
		w.Close()
	}
}

// inTo reports whether addr is a server of To.
func (m *mover) inTo(addr string) bool {
	return slices.ContainsFunc(m.cfg.To.Servers, func(s hashring.Server) bool { return s.Addr == addr })
}

// gather collects the keys: restore's record with Records, and every
// server's listing.
func (m *mover) gather(ctx context.Context) error {
	m.keys = make(map[string]map[string]bool)
	if m.cfg.Records {
		prefix := m.cfg.Layout.MemcachedValuesPrefix()
		_, err := etcdscan.Prefix(ctx, m.cfg.Etcd, prefix, 0, func(page []*mvccpb.KeyValue) error {
			for _, kv := range page {
				k := strings.TrimPrefix(string(kv.Key), prefix)
				if m.keys[k] == nil {
					m.keys[k] = make(map[string]bool, 1)
				}
				m.res.Recorded++
			}
			return nil
		}, clientv3.WithKeysOnly())
		if err != nil {
			return fmt.Errorf("topology: read the keys of restore's record: %w", err)
		}
	}
	attempts := cmp.Or(m.cfg.ListAttempts, DefaultListAttempts)
	if m.cfg.Records {
		attempts = 1
	}
	for _, a := range m.addrs {
		ls, err := m.writers[a].ListAgreed(ctx, attempts)
		if err != nil && m.cfg.Records && ctx.Err() == nil && m.inTo(a) {
			// The record names the keys; a listing only finds stray
			// copies, and a server that does not answer fails the moves.
			m.log.Warn("topology change: a server cannot list its keys; stray copies it holds stay", "server", a, "err", err)
			continue
		}
		if err != nil {
			if !m.inTo(a) && ctx.Err() == nil {
				m.log.Warn("topology change: a server leaving the pool does not answer; its keys are gone with it", "server", a, "err", err)
				m.res.Unreachable = append(m.res.Unreachable, a)
				m.down[a] = true
				continue
			}
			return fmt.Errorf("topology: list the keys of %s: %w", a, err)
		}
		l := ls[0]
		if !l.Agreed && !m.cfg.Records {
			short := fmt.Sprintf("%s: %d keys listed, %d items counted, after %d listings", a, l.Listed, l.Items, l.Listings)
			m.log.Error("topology change: a server's listings never agreed with its item count; keys it did not list are not moved", "server", a,
				"listed", l.Listed, "items", l.Items, "listings", l.Listings)
			m.res.ListingShort = append(m.res.ListingShort, short)
		}
		for _, k := range l.Keys {
			if m.keys[k.Key] == nil {
				m.keys[k.Key] = make(map[string]bool, 1)
			}
			m.keys[k.Key][a] = true
			m.res.Listed++
		}
	}
	return nil
}

// owners returns key's owner in From and in To.
func (m *mover) owners(key string) (oF, oT string) {
	return m.from.Servers()[m.from.Index(key)].Addr, m.dest.Servers()[m.dest.Index(key)].Addr
}

// valid returns why the mover must stop writing, nil while it may write.
func (m *mover) valid(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !m.cfg.Lead.Valid() {
		return election.ErrNotLeader
	}
	return nil
}

// get reads key from server; found is false when it is absent or the
// server is down.
func (m *mover) get(ctx context.Context, server, key string) (memfence.Item, bool, error) {
	if m.down[server] {
		return memfence.Item{}, false, nil
	}
	it, err := m.writers[server].Get(ctx, key)
	switch {
	case errors.Is(err, memcache.ErrCacheMiss):
		return memfence.Item{}, false, nil
	case errors.Is(err, memfence.ErrRejected):
		return memfence.Item{}, false, nil // a key memcached cannot hold
	case err != nil:
		return memfence.Item{}, false, fmt.Errorf("topology: read %q from %s: %w", key, server, err)
	}
	return it, true, nil
}

// del deletes key from server, fenced by the leader's term.
func (m *mover) del(ctx context.Context, server, key string) error {
	if err := m.valid(ctx); err != nil {
		return err
	}
	if err := m.writers[server].Delete(ctx, key, m.term); err != nil {
		return fmt.Errorf("topology: delete %q from %s: %w", key, server, err)
	}
	return nil
}

// clean is step 1 for key.
func (m *mover) clean(ctx context.Context, key string) error {
	oF, oT := m.owners(key)
	if oF == oT {
		return nil
	}
	if _, held, err := m.get(ctx, oF, key); err != nil || held {
		return err
	}
	_, stale, err := m.get(ctx, oT, key)
	if err != nil || !stale {
		return err
	}
	if err := m.del(ctx, oT, key); err != nil {
		return err
	}
	m.res.Cleaned++
	return nil
}

// move is steps 2 and 3 for key.
func (m *mover) move(ctx context.Context, key string) error {
	oF, oT := m.owners(key)
	for _, s := range slices.Sorted(maps.Keys(m.keys[key])) {
		if s != oF && s != oT && !m.down[s] {
			if err := m.del(ctx, s, key); err != nil {
				return err
			}
			m.res.Cleaned++
		}
	}
	if oF == oT {
		return nil
	}
	it, held, err := m.get(ctx, oF, key)
	if err != nil || !held {
		return err
	}
	if err := m.valid(ctx); err != nil {
		return err
	}
	err = m.writers[oT].Set(ctx, key, it.Value, int32(it.Exptime), it.Term)
	newer := errors.Is(err, memfence.ErrFenced)
	switch {
	case errors.Is(err, memfence.ErrRejected), errors.Is(err, memfence.ErrContended):
		m.unmoved(key, oF, oT, err.Error())
		return nil
	case err != nil && !newer:
		return fmt.Errorf("topology: copy %q from %s to %s: %w", key, oF, oT, err)
	}
	// Read back: the copy, or the newer item that fenced it, is on oT.
	got, there, err := m.get(ctx, oT, key)
	switch {
	case err != nil:
		return err
	case !there && it.Exptime != 0 && it.Exptime <= time.Now().Unix()+1:
		// Expired meanwhile, as it would have on oF.
	case !there:
		m.unmoved(key, oF, oT, fmt.Sprintf("not found on %s when read back after the copy", oT))
		return nil
	case got.Term < it.Term, got.Term == it.Term && !bytes.Equal(got.Value, it.Value):
		m.unmoved(key, oF, oT, fmt.Sprintf("%s holds term %d (%d bytes) when read back after copying term %d (%d bytes)",
			oT, got.Term, len(got.Value), it.Term, len(it.Value)))
		return nil
	}
	if err := m.del(ctx, oF, key); err != nil {
		return err
	}
	if newer {
		m.res.Newer++
	} else {
		m.res.Moved++
	}
	if m.cfg.Stats != nil {
		m.cfg.Stats.MovedKeys.Add(1)
	}
	return nil
}

// unmoved reports a key that stays on its old server.
func (m *mover) unmoved(key, from, to, reason string) {
	m.res.UnmovedCount++
	if m.cfg.Stats != nil {
		m.cfg.Stats.UnmovedKeys.Add(1)
	}
	if len(m.res.Unmoved) < MaxReportedUnmoved {
		m.res.Unmoved = append(m.res.Unmoved, Unmoved{Key: key, From: from, To: to, Reason: reason})
		m.log.Error("topology change: a key could not be moved; it stays on its old server, which readers of the new topology do not read",
			"key", key, "from", from, "to", to, "reason", reason)
	}
}
