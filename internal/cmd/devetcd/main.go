// Command devetcd runs a single-member etcd (package embedded) in a
// process of its own, for scripts/run-dev.sh: nodes of the development
// set-up then share an etcd that outlives any one of them, so that
// stopping the first node hands over to a second one, as the README's
// failover walk-through shows. It is no production etcd: one member, no
// TLS.
//
//	devetcd [-data-dir coordinator.etcd] [-listen 127.0.0.1:2379] [-history-retention 1h]
//
// SIGTERM stops it; SIGINT (a terminal's Ctrl-C) is left alone, since the
// script that runs it stops it on a second Ctrl-C only.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/embedded"
)

func main() {
	dir := flag.String("data-dir", "coordinator.etcd", "data directory")
	listen := flag.String("listen", embedded.DefaultClientAddr, "client address, host:port")
	history := flag.Duration("history-retention", time.Hour, "how long etcd keeps its history before compacting it; 0 for ever")
	flag.Parse()
	if err := run(*dir, *listen, *history); err != nil {
		fmt.Fprintln(os.Stderr, "devetcd:", err)
		os.Exit(1)
	}
}

func run(dir, listen string, history time.Duration) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	signal.Ignore(syscall.SIGINT)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv, err := embedded.Start(ctx, embedded.Config{Dir: abs, ClientAddr: listen, LogLevel: "fatal", HistoryRetention: history})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(os.Stderr, "devetcd: etcd listening on %s (data %s, pid %d)\n", strings.Join(srv.Endpoints(), ","), abs, os.Getpid())
	<-ctx.Done()
	return nil
}
