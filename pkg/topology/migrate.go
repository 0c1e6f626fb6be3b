package topology

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

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
// with To), lists the keys of every server of both topologies
// (memfence.Writer.Keys), and then, for each key K listed on server S, with
// owners oF (From's) and oT (To's):
//
//  1. Clean (once per change, recorded as Applied.Cleaned): a copy on
//     S = oT ≠ oF while oF does not hold K is left from an earlier
//     topology (A→B→A: K moved away from S, was deleted or expired on its
//     owner since, and the old copy on S was never removed), so it is
//     deleted, fenced by the leader's term. Left there, a reader of To
//     would see a value older than the delete.
//  2. Move: K on S = oF ≠ oT is copied to oT with its value, expiry and
//     term, fenced by that term: a copy on oT with a newer term wins (it
//     was written by a newer leader), one with the same or an older term
//     is overwritten (it is an earlier topology's, or this change's own
//     copy made before a crash). Only then is K deleted from S, fenced by
//     the leader's term. Copy first, delete second: a reader of From finds
//     K on oF until the copy exists, and a reader of To finds it on oT
//     from then on; deleting first would make both miss in between, and a
//     crash in between would lose the value.
//  3. K on S that is neither oF nor oT is read by no reader of either
//     topology: it is deleted.
//
// Then Applied becomes To. A leader that takes over from one that crashed
// meanwhile finds To set and runs the same change again: each step is
// idempotent; clean is skipped once recorded, since after it every copy on
// an oT that oF lacks is one this change made (its oF copy was deleted
// after it was copied).
//
// Readers: one of To sees, for each key, a miss or the value From's owner
// held (or a newer one), never an older one; one of From sees the values
// until their keys are deleted, then misses. The leader writes nothing new
// until Applied is To, so values do not change during the change.
//
// A server only in From that does not answer is skipped (its keys are gone
// with it, and are misses for To's readers); one in To that does not
// answer fails the change, which the leader retries.

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
	// Timeout bounds each exchange with memcached; zero means
	// memfence.DefaultTimeout.
	Timeout time.Duration
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
	case c.Lead.Term > 0xffffffff:
		return config.Errorf("topology", "Lead", "term %d does not fit memcached's flags", c.Lead.Term)
	case c.Timeout < 0:
		return config.Errorf("topology", "Timeout", "%s is negative", c.Timeout)
	}
	if err := c.From.Validate(); err != nil {
		return err
	}
	return c.To.Validate()
}

// MigrateResult counts what Migrate did.
type MigrateResult struct {
	// Listed counts the keys listed on every server.
	Listed int
	// Moved counts the keys copied to their new server and deleted from
	// their old one.
	Moved int
	// Newer counts the keys whose new server held a newer term than the
	// old one's copy: that copy was deleted and not copied.
	Newer int
	// Cleaned counts the copies from earlier topologies deleted (steps 1
	// and 3).
	Cleaned int
	// Unreachable lists the servers only in From that did not answer.
	Unreachable []string
}

// Migrate moves the keys of a change of topology from cfg.From to cfg.To
// (see above) and records To as applied. It returns election.ErrNotLeader
// once the leadership is no longer valid, and memcached's or etcd's errors,
// after which it may be called again with Cleaned as ReadApplied says.
func Migrate(ctx context.Context, cfg MigrateConfig) (MigrateResult, error) {
	var res MigrateResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	log := cmp.Or(cfg.Logger, slog.Default())
	lead, term := cfg.Lead, uint32(cfg.Lead.Term)
	to := cfg.To
	if err := writeApplied(ctx, cfg.Etcd, cfg.Layout, lead.Guard(), Applied{Applied: cfg.From, To: &to, Cleaned: cfg.Cleaned}); err != nil {
		return res, err
	}
	from, err := hashring.New(cfg.From.Ring())
	if err != nil {
		return res, err
	}
	dest, err := hashring.New(cfg.To.Ring())
	if err != nil {
		return res, err
	}
	// One writer per server, so that each read and write goes to the
	// server meant.
	var addrs []string
	for _, s := range slices.Concat(cfg.From.Servers, cfg.To.Servers) {
		if !slices.Contains(addrs, s.Addr) {
			addrs = append(addrs, s.Addr)
		}
	}
	writers := make(map[string]*memfence.Writer, len(addrs))
	defer func() {
		for _, w := range writers {
			w.Close()
		}
	}()
	for _, a := range addrs {
		w, err := memfence.New(memfence.Config{Servers: []string{a}, Timeout: cfg.Timeout})
		if err != nil {
			return res, err
		}
		writers[a] = w
	}
	inTo := func(a string) bool {
		return slices.ContainsFunc(cfg.To.Servers, func(s hashring.Server) bool { return s.Addr == a })
	}
	type listed struct {
		server string
		ki     memfence.KeyInfo
	}
	var keys []listed
	held := make(map[string]map[string]bool, len(addrs)) // server → its keys
	for _, a := range addrs {
		ks, err := writers[a].Keys(ctx)
		if err != nil {
			if !inTo(a) && ctx.Err() == nil {
				log.Warn("topology change: a server leaving the pool does not answer; its keys are gone with it", "server", a, "err", err)
				res.Unreachable = append(res.Unreachable, a)
				continue
			}
			return res, fmt.Errorf("topology: list the keys of %s: %w", a, err)
		}
		held[a] = make(map[string]bool, len(ks))
		for _, k := range ks {
			keys = append(keys, listed{server: a, ki: k})
			held[a][k.Key] = true
		}
	}
	res.Listed = len(keys)
	owner := func(r *hashring.Ring, key string) string { return r.Servers()[r.Index(key)].Addr }
	valid := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !lead.Valid() {
			return election.ErrNotLeader
		}
		return nil
	}
	del := func(server, key string) error {
		if err := valid(); err != nil {
			return err
		}
		if err := writers[server].Delete(ctx, key, term); err != nil {
			return fmt.Errorf("topology: delete %q from %s: %w", key, server, err)
		}
		return nil
	}
	if !cfg.Cleaned {
		for _, k := range keys {
			oF, oT := owner(from, k.ki.Key), owner(dest, k.ki.Key)
			if k.server == oT && oT != oF && !held[oF][k.ki.Key] {
				if err := del(k.server, k.ki.Key); err != nil {
					return res, err
				}
				res.Cleaned++
			}
		}
		if err := writeApplied(ctx, cfg.Etcd, cfg.Layout, lead.Guard(), Applied{Applied: cfg.From, To: &to, Cleaned: true}); err != nil {
			return res, err
		}
	}
	now := time.Now().Unix()
	for _, k := range keys {
		key := k.ki.Key
		oF, oT := owner(from, key), owner(dest, key)
		switch {
		case k.server == oF && oF != oT:
			newer, err := copyItem(ctx, writers[oF], writers[oT], k.ki, now, valid)
			if err != nil {
				return res, fmt.Errorf("topology: copy %q from %s to %s: %w", key, oF, oT, err)
			}
			if err := del(oF, key); err != nil {
				return res, err
			}
			if newer {
				res.Newer++
			} else {
				res.Moved++
			}
		case k.server != oF && k.server != oT:
			if err := del(k.server, key); err != nil {
				return res, err
			}
			res.Cleaned++
		}
	}
	if err := writeApplied(ctx, cfg.Etcd, cfg.Layout, lead.Guard(), Applied{Applied: cfg.To}); err != nil {
		return res, err
	}
	return res, nil
}

// copyItem copies ki's item from src to dst with its value, expiry and
// term, fenced by that term. newer reports that dst held a newer term (and
// was left alone); an item gone from src or expired is not copied.
func copyItem(ctx context.Context, src, dst *memfence.Writer, ki memfence.KeyInfo, now int64, valid func() error) (newer bool, _ error) {
	if ki.Exptime != 0 && ki.Exptime <= now {
		return false, nil
	}
	it, err := src.Get(ctx, ki.Key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := valid(); err != nil {
		return false, err
	}
	err = dst.Set(ctx, ki.Key, it.Value, int32(ki.Exptime), it.Term)
	if errors.Is(err, memfence.ErrFenced) {
		return true, nil
	}
	return false, err
}
