package main

import (
	"context"
	"fmt"
	"io"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

// progressAfter is how long submit --wait waits quietly before it starts
// telling what it waits for, and how often it tells it again.
const progressAfter = time.Second

// waitWithProgress waits until tok is applied. When that takes longer than
// progressAfter it writes a line to w every progressAfter with the applied
// watermark, the pending work and the time waited, so a wait behind a long
// backlog, or with no leader, is visibly a wait and not a hang.
func waitWithProgress(ctx context.Context, c *client.Client, cli *clientv3.Client, namespace string, tok client.Token, w io.Writer) error {
	done := make(chan error, 1)
	go func() { done <- c.WaitApplied(ctx, tok) }()
	in, err := inspect.New(cli, namespace)
	if err != nil {
		return <-done
	}
	start := time.Now()
	tick := time.NewTicker(progressAfter)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			fmt.Fprintln(w, progressLine(ctx, in, tok, time.Since(start)))
		}
	}
}

// progressLine says what a wait for tok is waiting behind.
func progressLine(ctx context.Context, in *inspect.Inspector, tok client.Token, waited time.Duration) string {
	waited = waited.Round(time.Second)
	sctx, cancel := context.WithTimeout(ctx, progressAfter)
	defer cancel()
	st, err := in.Status(sctx)
	if err != nil {
		return fmt.Sprintf("waiting for token %s to be applied (%s; status unavailable: %v)", tok, waited, err)
	}
	leader := st.Leader
	if leader == "" {
		leader = "none elected"
	}
	return fmt.Sprintf("waiting for token %s to be applied (%s): applied watermark %s, %d operations in %d batches pending, leader %s",
		tok, waited, st.Applied, st.PendingOps, st.PendingBatches, leader)
}
