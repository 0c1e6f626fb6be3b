package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// wmEvent is the watermark reaching tok, as seen at when.
type wmEvent struct {
	tok  tokenseq.Token
	when time.Time
}

// watermarkWatcher records when the applied watermark moves.
type watermarkWatcher struct {
	mu      sync.Mutex
	events  []wmEvent // in increasing token order
	changed chan struct{}
	err     error
	cancel  context.CancelFunc
	done    chan struct{}
}

// watchWatermark starts recording the watermark of layout's namespace. The
// watermark read at the start counts as reached at the start.
func watchWatermark(ctx context.Context, cli *clientv3.Client, layout keyspace.Layout) (*watermarkWatcher, error) {
	cur, rev, err := tokenseq.Watermark(ctx, cli, layout)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	w := &watermarkWatcher{
		events: []wmEvent{{tok: cur, when: time.Now()}}, changed: make(chan struct{}),
		cancel: cancel, done: make(chan struct{}),
	}
	wch := cli.Watch(wctx, layout.Applied(), clientv3.WithRev(rev+1))
	go func() {
		defer close(w.done)
		for wr := range wch {
			now := time.Now()
			if err := wr.Err(); err != nil {
				w.fail(err)
				return
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				t, err := tokenseq.ParseToken(string(ev.Kv.Value))
				if err != nil {
					continue
				}
				w.add(wmEvent{tok: t, when: now})
			}
		}
		w.fail(errors.New("watermark watch closed"))
	}()
	return w, nil
}

func (w *watermarkWatcher) add(ev wmEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if last := w.events[len(w.events)-1]; !last.tok.Less(ev.tok) {
		return
	}
	w.events = append(w.events, ev)
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *watermarkWatcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

// stop ends the watch.
func (w *watermarkWatcher) stop() {
	w.cancel()
	<-w.done
}

// reached returns when the watermark first reached tok: a batch is
// applied when the watermark is at or past its token, revision and index
// (a round may end partway through one transaction's batches).
func (w *watermarkWatcher) reached(tok tokenseq.Token) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reachedLocked(tok)
}

func (w *watermarkWatcher) reachedLocked(tok tokenseq.Token) (time.Time, bool) {
	i := sort.Search(len(w.events), func(i int) bool { return !w.events[i].tok.Less(tok) })
	if i == len(w.events) {
		return time.Time{}, false
	}
	return w.events[i].when, true
}

// wait blocks until the watermark reaches tok and returns when it did.
func (w *watermarkWatcher) wait(ctx context.Context, tok tokenseq.Token) (time.Time, error) {
	for {
		w.mu.Lock()
		t, ok := w.reachedLocked(tok)
		ch, err := w.changed, w.err
		w.mu.Unlock()
		if ok {
			return t, nil
		}
		if err != nil {
			return time.Time{}, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("watermark did not reach %s: %w", tok, ctx.Err())
		}
	}
}
