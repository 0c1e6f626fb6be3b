// Package security tests TLS and authentication between the coordinator's
// processes and etcd: an embedded etcd serving TLS with client-certificate
// authentication, with certificates made by the test, and etcd's auth with
// the roles of package rbac, which restrict a caller to its own name. The
// command-line tests run the real binary.
package security

import (
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, harness.Cleanup) }
