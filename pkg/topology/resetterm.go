package topology

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/etcdscan"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/restore"
)

// Starting a namespace's terms again.
//
// An item's flags hold a term up to memfence.MaxTerm (65535); a node that
// wins a later term does not lead. ResetTerm starts the count again, with
// every node of the namespace stopped:
//
//  1. it refuses while any node campaigns or leads (an election key
//     exists: ErrNodesRunning);
//  2. it sets the term of every record of restore's to 0, as it reads
//     their keys;
//  3. it re-stamps every item the namespace's servers hold (those of the
//     topology, the applied one and a change under way) with term 0,
//     keeping value and lifetime (memfence.Writer.Restamp): the keys of
//     restore's record and of every server's listing (listed until each
//     listing agrees with the server's item count);
//  4. it deletes the term key, so that the next leader's term is 1.
//
// The records' writes and the delete are made only while no election key
// exists and the term key is as read in step 1, so a node that led
// meanwhile makes ResetTerm fail with ErrNodesRunning (run it again once
// every node is stopped): the term is not reset under it.
//
// Why it keeps fencing: a term orders writers only among themselves, and
// after the reset every item carries term 0, older than any term to come;
// values and lifetimes do not change, so readers see nothing happen but
// the flags. It relies on no writer of an earlier term being left: a node
// stopped means its process has exited (a paused process whose lease ran
// out holds no election key and could resume a write stamped with its
// former term, which would then win over the items re-stamped 0).

// recordsPerTxn bounds the records one transaction of ResetTerm rewrites
// (etcd's default --max-txn-ops is 128, and the guard takes two).
const recordsPerTxn = 120

// ErrNodesRunning means a node campaigns or leads in the namespace, or did
// while ResetTerm ran: stop every node first.
var ErrNodesRunning = errors.New("topology: a node campaigns or leads in the namespace; stop every node (their processes must have exited) and run it again")

// ResetTermConfig configures ResetTerm. Zero values mean the defaults
// noted.
type ResetTermConfig struct {
	// Etcd is the etcd client.
	Etcd *clientv3.Client
	// Layout is the namespace's key layout.
	Layout keyspace.Layout
	// ListAttempts bounds the listings of a server that disagree with its
	// item count (see memfence.Writer.ListAgreed); zero means
	// DefaultListAttempts.
	ListAttempts int
	// Timeout bounds each exchange with memcached; zero means
	// memfence.DefaultTimeout.
	Timeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Validate checks the config; its errors are *config.FieldError.
func (c *ResetTermConfig) Validate() error {
	switch {
	case c.Etcd == nil:
		return config.Errorf("topology", "Etcd", "is nil")
	case c.ListAttempts < 0:
		return config.Errorf("topology", "ListAttempts", "%d is negative", c.ListAttempts)
	case c.Timeout < 0:
		return config.Errorf("topology", "Timeout", "%s is negative", c.Timeout)
	}
	return nil
}

// ResetTermResult is what ResetTerm did.
type ResetTermResult struct {
	// Term is the namespace's term before the reset.
	Term uint64 `json:"term"`
	// Servers are the servers whose items were re-stamped.
	Servers []string `json:"servers"`
	// Keys counts the keys found: in restore's record or a listing.
	Keys int `json:"keys"`
	// Restamped counts the items re-stamped with term 0 (an item already
	// of term 0 counts too).
	Restamped int `json:"restamped"`
	// Records counts the records of restore's set to term 0.
	Records int `json:"records"`
	// ListingShort names the servers whose listings never held as many
	// keys as they counted items, with the counts: an item they did not
	// list keeps its term, and fences the next leaders until a write of a
	// later term or its expiry; run ResetTerm again.
	ListingShort []string `json:"listing_short,omitempty"`
}

// ResetTerm starts the namespace's terms again (see above). It returns
// ErrNodesRunning while a node campaigns or leads, or when one did while it
// ran.
func ResetTerm(ctx context.Context, cfg ResetTermConfig) (ResetTermResult, error) {
	var res ResetTermResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	log := cmp.Or(cfg.Logger, slog.Default())
	cli, l := cfg.Etcd, cfg.Layout
	termKey := l.Term()
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(l.Election()+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(termKey),
	).Commit()
	if err != nil {
		return res, fmt.Errorf("topology: read the election and the term: %w", err)
	}
	if resp.Responses[0].GetResponseRange().Count > 0 {
		return res, ErrNodesRunning
	}
	var termRev int64
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		res.Term, termRev = uint64(kvs[0].Version), kvs[0].ModRevision
	}
	// Nothing is written unless no node campaigns and the term is as read.
	guard := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(l.Election()+"/"), "=", 0).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(termKey), "=", termRev),
	}
	rings, err := namespaceRings(ctx, cli, l)
	if err != nil {
		return res, err
	}
	writers := map[string]*memfence.Writer{}
	defer func() {
		for _, w := range writers {
			w.Close()
		}
	}()
	for _, r := range rings {
		for _, s := range r.Servers() {
			if writers[s.Addr] != nil {
				continue
			}
			w, err := memfence.New(memfence.Config{Servers: []string{s.Addr}, Timeout: cfg.Timeout})
			if err != nil {
				return res, err
			}
			writers[s.Addr] = w
			res.Servers = append(res.Servers, s.Addr)
		}
	}
	// Every key, with the servers to re-stamp it on: those that listed it
	// and its owner in each ring.
	on := map[string]map[string]bool{}
	add := func(key, server string) {
		if on[key] == nil {
			on[key] = map[string]bool{}
		}
		on[key][server] = true
	}
	// The records are set to term 0 page by page as they are read; the
	// term key is deleted only after the items are re-stamped too.
	prefix := l.MemcachedValuesPrefix()
	if _, err := etcdscan.Prefix(ctx, cli, prefix, 0, func(page []*mvccpb.KeyValue) error {
		var puts []clientv3.Op
		for _, kv := range page {
			key := strings.TrimPrefix(string(kv.Key), prefix)
			for _, r := range rings {
				add(key, r.Servers()[r.Index(key)].Addr)
			}
			var rec restore.Record
			if json.Unmarshal(kv.Value, &rec) != nil || rec.Term == 0 {
				continue
			}
			rec.Term = 0
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			puts = append(puts, clientv3.OpPut(string(kv.Key), string(b)))
		}
		for chunk := range slices.Chunk(puts, recordsPerTxn) {
			resp, err := cli.Txn(ctx).If(guard...).Then(chunk...).Commit()
			if err != nil {
				return fmt.Errorf("topology: re-stamp restore's records: %w", err)
			}
			if !resp.Succeeded {
				return ErrNodesRunning
			}
			res.Records += len(chunk)
		}
		return nil
	}); err != nil {
		return res, err
	}
	attempts := cmp.Or(cfg.ListAttempts, DefaultListAttempts)
	for _, addr := range res.Servers {
		ls, err := writers[addr].ListAgreed(ctx, attempts)
		if err != nil {
			return res, fmt.Errorf("topology: list the keys of %s: %w", addr, err)
		}
		if lst := ls[0]; !lst.Agreed {
			short := fmt.Sprintf("%s: %d keys listed, %d items counted, after %d listings", addr, lst.Listed, lst.Items, lst.Listings)
			log.Error("reset term: a server's listings never agreed with its item count", "listing", short)
			res.ListingShort = append(res.ListingShort, short)
		}
		for _, k := range ls[0].Keys {
			add(k.Key, addr)
		}
	}
	res.Keys = len(on)
	for _, key := range slices.Sorted(maps.Keys(on)) {
		for _, addr := range slices.Sorted(maps.Keys(on[key])) {
			found, err := writers[addr].Restamp(ctx, key, 0)
			if err != nil && !errors.Is(err, memfence.ErrRejected) {
				return res, fmt.Errorf("topology: re-stamp %q on %s: %w", key, addr, err)
			}
			if found {
				res.Restamped++
			}
		}
	}
	resp, err = cli.Txn(ctx).If(guard...).Then(clientv3.OpDelete(termKey)).Commit()
	if err != nil {
		return res, fmt.Errorf("topology: delete %s: %w", termKey, err)
	}
	if !resp.Succeeded {
		return res, ErrNodesRunning
	}
	log.Info("term reset: the next leader's term is 1", "term_before", res.Term, "keys", res.Keys,
		"restamped", res.Restamped, "records", res.Records, "servers", res.Servers)
	return res, nil
}

// namespaceRings returns the rings of the namespace's topology, its
// applied one and a change under way (none on a namespace without a
// topology).
func namespaceRings(ctx context.Context, cli *clientv3.Client, l keyspace.Layout) ([]*hashring.Ring, error) {
	var ts []Topology
	t, err := Get(ctx, cli, l)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, err
	default:
		ts = append(ts, t)
	}
	app, found, err := ReadApplied(ctx, cli, l)
	if err != nil {
		return nil, err
	}
	if found {
		ts = append(ts, app.Applied)
		if app.To != nil {
			ts = append(ts, *app.To)
		}
	}
	var rings []*hashring.Ring
	for _, t := range ts {
		r, err := hashring.New(t.Ring())
		if err != nil {
			return nil, err
		}
		rings = append(rings, r)
	}
	return rings, nil
}
