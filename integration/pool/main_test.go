// Package pool tests a pool of memcached servers: the distributions against
// readers in other languages, the topology kept in etcd, and the detection
// of servers that restart.
package pool_test

import (
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
