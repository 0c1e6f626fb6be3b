package client

import (
	"context"

	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

const (
	// pruneQueue is how many receipts may wait for deletion; beyond it a
	// receipt is left to go with its lease.
	pruneQueue = 4096
	// maxPruneBatch is the most receipts deleted in one transaction.
	maxPruneBatch = 100
)

// receipt names the receipt of one accepted batch.
type receipt struct {
	inc int64
	id  string
}

// receiptPruner deletes the receipts of a session's submissions once their
// replies have arrived, many per transaction. A receipt it fails to delete,
// or has no room for, goes with the incarnation's lease.
type receiptPruner struct {
	sub   *tokenseq.Submitter
	name  string
	queue chan receipt
}

func newReceiptPruner(sub *tokenseq.Submitter, name string) *receiptPruner {
	return &receiptPruner{sub: sub, name: name, queue: make(chan receipt, pruneQueue)}
}

// offer queues r for deletion without blocking.
func (p *receiptPruner) offer(r receipt) {
	select {
	case p.queue <- r:
	default: // the receipt goes with the lease
	}
}

// run deletes queued receipts until ctx ends.
func (p *receiptPruner) run(ctx context.Context) {
	for {
		var first receipt
		select {
		case <-ctx.Done():
			return
		case first = <-p.queue:
		}
		for inc, ids := range p.drain(first) {
			_ = p.sub.DeleteReceipts(ctx, p.name, inc, ids)
		}
	}
}

// drain returns first and the receipts queued behind it, up to
// maxPruneBatch, by incarnation.
func (p *receiptPruner) drain(first receipt) map[int64][]string {
	byInc := map[int64][]string{first.inc: {first.id}}
	for n := 1; n < maxPruneBatch; n++ {
		select {
		case r := <-p.queue:
			byInc[r.inc] = append(byInc[r.inc], r.id)
		default:
			return byInc
		}
	}
	return byInc
}
