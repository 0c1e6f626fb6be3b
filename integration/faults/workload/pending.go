package workload

import (
	"container/heap"
	"context"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// The bound on pending submissions (Config.MaxPending): callers hold off
// while too many acknowledged tokens are above the applied watermark.

// followWatermark reads the applied watermark every few milliseconds for
// the pending bound.
func (w *Workload) followWatermark(cli *client.Client) {
	defer w.wg.Done()
	for {
		ctx, cancel := context.WithTimeout(w.stopCtx, time.Second)
		resp, err := cli.Etcd().Get(ctx, cli.Layout().Applied())
		cancel()
		if err == nil && len(resp.Kvs) > 0 {
			if tok, err := tokenseq.ParseToken(string(resp.Kvs[0].Value)); err == nil {
				w.pendMu.Lock()
				w.watermark = tok
				w.pendMu.Unlock()
			}
		}
		if !w.sleep(20 * time.Millisecond) {
			return
		}
	}
}

// pending counts the acknowledged tokens above the watermark.
func (w *Workload) pending() int {
	w.pendMu.Lock()
	defer w.pendMu.Unlock()
	for w.pendToks.Len() > 0 && !w.watermark.Less(w.pendToks[0]) {
		heap.Pop(&w.pendToks)
	}
	return w.pendToks.Len()
}

// holdOff waits while the pending bound is reached; it reports false when
// the workload stopped.
func (w *Workload) holdOff() bool {
	for w.cfg.MaxPending > 0 && w.pending() >= w.cfg.MaxPending {
		if !w.sleep(20 * time.Millisecond) {
			return false
		}
	}
	return !w.stopped()
}

// tokenHeap is a min-heap of tokens.
type tokenHeap []tokenseq.Token

func (h tokenHeap) Len() int           { return len(h) }
func (h tokenHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h tokenHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *tokenHeap) Push(x any)        { *h = append(*h, x.(tokenseq.Token)) }
func (h *tokenHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
