package main

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

// openInspector validates the global flags, dials etcd and returns an
// inspector of the namespace with a function that closes the connection.
func openInspector(ctx context.Context, g *globalOptions) (*inspect.Inspector, func(), error) {
	if err := g.validate(); err != nil {
		return nil, nil, err
	}
	cli, err := g.etcdClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	in, err := inspect.New(cli, g.namespace)
	if err != nil {
		cli.Close()
		return nil, nil, err
	}
	return in, closeEtcd(cli), nil
}

func closeEtcd(cli *clientv3.Client) func() {
	return func() { _ = cli.Close() }
}
