// Package etcderr classifies the errors etcd's client returns.
package etcderr

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// IsLeaseNotFound reports whether err says the lease does not exist: it
// expired, or was revoked.
func IsLeaseNotFound(err error) bool { return errors.Is(err, rpctypes.ErrLeaseNotFound) }
