package inspect

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchStatus calls fn with the namespace's status, and again each time it
// changes, until ctx ends or fn returns an error. A change is any write under
// the namespace that alters the summary; writes that leave it as it was (a
// lease renewal, a receipt) do not call fn. Bursts of writes are read as one
// change: the status is read again once per burst, not once per write, so a
// busy namespace costs a reader at most one Status read per etcd round trip.
//
// It returns ctx's error when ctx ends, fn's error when fn fails, and the
// watch's or a read's error otherwise.
func (in *Inspector) WatchStatus(ctx context.Context, fn func(Status) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := in.Status(ctx)
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	// Watching from the revision after the one the status was read at would
	// need Status to report it; starting from the current one instead can
	// only add a spurious read, never lose a change.
	wch := in.cli.Watch(ctx, in.layout.Prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	last := st
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("inspect: watch %s: %w", in.layout.Prefix(), ErrWatchEnded)
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("inspect: watch %s: %w", in.layout.Prefix(), err)
			}
		}
		drain(wch)
		st, err := in.Status(ctx)
		if err != nil {
			return err
		}
		if st == last {
			continue
		}
		last = st
		if err := fn(st); err != nil {
			return err
		}
	}
}

// ErrWatchEnded is returned by WatchStatus when etcd ends the watch (the
// member went away, or the client was closed) before ctx ended.
var ErrWatchEnded = errors.New("watch ended")

// drain takes the watch responses already waiting, so that a burst of
// writes costs one status read.
func drain(wch clientv3.WatchChan) {
	for {
		select {
		case _, ok := <-wch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
