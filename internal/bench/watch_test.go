package bench

import (
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// A batch counts as applied when the watermark reaches its whole token: a
// round may end partway through the batches one transaction stored, so a
// watermark at the batch's revision but a lower index has not applied it.
func TestWatermarkReachesWholeTokens(t *testing.T) {
	t0 := time.Unix(100, 0)
	w := &watermarkWatcher{events: []wmEvent{{tok: tokenseq.Token{Revision: 4}, when: t0}}, changed: make(chan struct{})}
	w.add(wmEvent{tok: tokenseq.Token{Revision: 5, Index: 3}, when: t0.Add(time.Second)})
	w.add(wmEvent{tok: tokenseq.Token{Revision: 5, Index: 2}, when: t0.Add(2 * time.Second)}) // older: ignored
	w.add(wmEvent{tok: tokenseq.Token{Revision: 5, Index: 9}, when: t0.Add(3 * time.Second)})
	for _, c := range []struct {
		tok  tokenseq.Token
		want time.Duration
		ok   bool
	}{
		{tokenseq.Token{Revision: 4}, 0, true},
		{tokenseq.Token{Revision: 5}, time.Second, true},
		{tokenseq.Token{Revision: 5, Index: 3}, time.Second, true},
		{tokenseq.Token{Revision: 5, Index: 4}, 3 * time.Second, true},
		{tokenseq.Token{Revision: 5, Index: 10}, 0, false},
		{tokenseq.Token{Revision: 6}, 0, false},
	} {
		at, ok := w.reached(c.tok)
		if ok != c.ok || (ok && at.Sub(t0) != c.want) {
			t.Errorf("reached(%s) = %v after the start, %v; want %v, %v", c.tok, at.Sub(t0), ok, c.want, c.ok)
		}
	}
}
