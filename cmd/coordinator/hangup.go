package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coordinator-dev/coordinator/pkg/tlsreload"
)

// reloadOnHangup re-reads, at each SIGHUP, every set of TLS files the
// process watches (package tlsreload: the etcd client's --cacert, --cert
// and --key, the API's --api-cert, --api-key and --api-client-ca), which
// are re-read when they change anyway, and logs the outcome; a set that
// does not load keeps its last good files. Handled, SIGHUP does not end the
// process. stop stops the handling and waits for it.
func reloadOnHangup(ctx context.Context, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			n, err := tlsreload.ReloadAll()
			if err != nil {
				log.Error("SIGHUP: TLS files that do not load keep their last good files", "sets", n, "err", err)
				continue
			}
			log.Info("SIGHUP: TLS files re-read", "sets", n)
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}
