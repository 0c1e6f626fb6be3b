// Package etcdscan reads large key ranges from etcd a page at a time, so
// that no single response carries a whole prefix (etcd bounds a response
// by its --max-request-bytes, and a large one holds the server's memory).
package etcdscan

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPageSize is the page size used when a page size of zero is given.
const DefaultPageSize = 1000

// Prefix calls fn with every key under prefix, in key order, a page of at
// most pageSize keys at a time (zero means DefaultPageSize). Every page is
// read at the revision of the first, so the pages together are one
// consistent view; that revision is returned. An error of fn ends the scan
// and is returned as it is. opts are added to every read
// (clientv3.WithKeysOnly, say).
func Prefix(ctx context.Context, kv clientv3.KV, prefix string, pageSize int64, fn func(page []*mvccpb.KeyValue) error, opts ...clientv3.OpOption) (int64, error) {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	var rev int64
	for {
		page := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}, opts...)
		if rev != 0 {
			page = append(page, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, from, page...)
		if err != nil {
			return rev, err
		}
		if rev == 0 {
			// The header of a read at an older revision carries the
			// store's current one: keep the first page's.
			rev = resp.Header.Revision
		}
		if err := fn(resp.Kvs); err != nil {
			return rev, err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = After(string(resp.Kvs[len(resp.Kvs)-1].Key))
	}
}

// After is the first key that sorts after key: where the next page of a
// range that ended at key starts.
func After(key string) string { return key + "\x00" }
