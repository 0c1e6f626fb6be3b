package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// Standalone is a whole deployment for code that runs without a
// testing.TB, such as Example functions: an embedded etcd member, a
// memcached process on a free loopback port and one node leading the
// default namespace. Close stops all three, by their own handles and pid.
type Standalone struct {
	// Endpoints are the etcd member's client URLs.
	Endpoints []string
	// MemcachedAddr is memcached's host:port.
	MemcachedAddr string

	dir    string
	etcd   *embedded.Server
	cli    *clientv3.Client
	mc     *Memcached
	cancel context.CancelFunc
	done   chan error
}

// StartStandalone starts the deployment and returns once the node leads.
func StartStandalone(ctx context.Context) (_ *Standalone, err error) {
	s := &Standalone{done: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.dir, err = os.MkdirTemp("", "coordinator-standalone-"); err != nil {
		return nil, err
	}
	s.etcd, err = embedded.Start(ctx, embedded.Config{Dir: s.dir, ClientAddr: "127.0.0.1:0", LogLevel: "panic"})
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	s.Endpoints = s.etcd.Endpoints()
	if s.cli, err = clientv3.New(clientv3.Config{Endpoints: s.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
		return nil, err
	}
	for range 10 {
		port, perr := freePort()
		if perr != nil {
			return nil, perr
		}
		mc := &Memcached{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if err = mc.start(); err == nil {
			s.mc = mc
			break
		}
	}
	if s.mc == nil {
		return nil, fmt.Errorf("start memcached: %w", err)
	}
	s.MemcachedAddr = s.mc.Addr

	nctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	layout := keyspace.MustNew(keyspace.DefaultNamespace)
	go func() {
		s.done <- node.Run(nctx, node.Config{
			Etcd: s.cli, Layout: layout, NodeID: "standalone", LeaseTTL: 2 * time.Second,
			Memcached: []string{s.MemcachedAddr}, Logger: Logger(),
		})
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		st, oerr := election.Observe(ctx, s.cli, layout)
		if oerr == nil && st.Leader == "standalone" {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the node did not lead: %w", errors.Join(ctx.Err(), oerr))
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("the node stopped: %v", err)
		case <-tick.C:
		}
	}
}

// Close stops the node, memcached and etcd, and removes etcd's data.
func (s *Standalone) Close() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	if s.mc != nil {
		s.mc.kill()
	}
	if s.cli != nil {
		_ = s.cli.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
