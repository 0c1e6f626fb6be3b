package inspect

import "context"

// PendingOpsPage is the first operations of the pending queue in token
// order, with the size of the whole queue and the keys of pending records
// that cannot be decoded.
type PendingOpsPage struct {
	// Ops are the first pending operations in token order, at most the
	// limit asked for.
	Ops []PendingOp
	// Total is the number of pending operations, listed or not.
	Total int
	// Undecodable are the etcd keys of pending records that cannot be
	// decoded; the leader sets them aside.
	Undecodable []string
}

// PendingOpsFirst reads the pending operations in token order and returns
// the first limit of them; limit 0 or less means all.
func (in *Inspector) PendingOpsFirst(ctx context.Context, limit int) (PendingOpsPage, error) {
	p, err := in.Pending(ctx)
	if err != nil {
		return PendingOpsPage{}, err
	}
	page := PendingOpsPage{Undecodable: p.Bad}
	for _, b := range p.Batches {
		for i, o := range b.Ops {
			page.Total++
			if limit > 0 && len(page.Ops) >= limit {
				continue
			}
			page.Ops = append(page.Ops, PendingOp{
				Token: b.Token, Index: i, Name: b.Name, Incarnation: b.Incarnation,
				Op: o.Kind.String(), Key: o.Key, ValueBytes: len(o.Value),
			})
		}
	}
	return page, nil
}
