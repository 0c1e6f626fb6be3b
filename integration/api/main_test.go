// Package api tests the caller API (pkg/apiserver) against a real embedded
// etcd, real memcached processes and real coordinator nodes, through real
// gRPC and HTTP/JSON clients.
package api

import (
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, harness.Cleanup, httpClient.CloseIdleConnections) }
