package client_test

import (
	"context"
	"sync"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

var (
	deploymentOnce sync.Once
	deployment     *testenv.Standalone
)

// exampleDeployment starts, on first use, the etcd member, memcached and
// node the examples run against, and returns where they listen. A program
// of its own names its etcd cluster's endpoints and memcached servers.
func exampleDeployment() (etcdEndpoints []string, memcachedAddr string) {
	deploymentOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		if deployment, err = testenv.StartStandalone(ctx); err != nil {
			panic(err)
		}
	})
	return deployment.Endpoints, deployment.MemcachedAddr
}

// stopExampleDeployment stops what exampleDeployment started, if anything.
func stopExampleDeployment() {
	if deployment != nil {
		deployment.Close()
	}
}
