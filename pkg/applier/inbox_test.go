package applier

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

func items(revs ...int64) []pending {
	out := make([]pending, len(revs))
	for i, r := range revs {
		out[i] = pending{tok: tokenseq.Token{Revision: r}}
	}
	return out
}

func TestInboxKeepsOrderAndBoundsItsSize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in := newInbox(3)
	if !in.put(ctx, items(1, 2)) || !in.put(ctx, items(3)) {
		t.Fatal("put into a non-full inbox failed")
	}
	// Full: the next put waits until something is taken.
	put := make(chan bool, 1)
	go func() { put <- in.put(ctx, items(4, 5)) }()
	select {
	case <-put:
		t.Fatal("put into a full inbox did not wait")
	default:
	}
	got, err := in.take(ctx, 2)
	if err != nil || len(got) != 2 || got[0].tok.Revision != 1 || got[1].tok.Revision != 2 {
		t.Fatalf("take = %+v, %v", got, err)
	}
	if !<-put {
		t.Fatal("put after room was made failed")
	}
	stop := errors.New("stop")
	in.fail(stop)
	got, err = in.take(ctx, 10)
	if err != nil || len(got) != 3 || got[0].tok.Revision != 3 || got[2].tok.Revision != 5 {
		t.Fatalf("items before the failure: %+v, %v", got, err)
	}
	if _, err := in.take(ctx, 10); !errors.Is(err, stop) {
		t.Fatalf("take after the items = %v, want the failure", err)
	}
	if in.put(ctx, items(6)) {
		t.Fatal("put after the failure succeeded")
	}
}

func TestInboxTakeHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in := newInbox(1)
	done := make(chan error, 1)
	go func() {
		_, err := in.take(ctx, 1)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("take = %v", err)
	}
}
