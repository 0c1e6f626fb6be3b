package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// Kinds of memcached errors, the kind label of
// coordinator_memcached_errors_total.
const (
	// KindFenced: a newer leader wrote the key (memfence.ErrFenced).
	KindFenced = "fenced"
	// KindRejected: memcached refused the item for good
	// (memfence.ErrRejected: too large, a bad key).
	KindRejected = "rejected"
	// KindContended: the key changed under every attempt
	// (memfence.ErrContended).
	KindContended = "contended"
	// KindCanceled: the write was abandoned, its context ended (leadership
	// lost, the node stopping).
	KindCanceled = "canceled"
	// KindTimeout: memcached did not answer in time.
	KindTimeout = "timeout"
	// KindConnection: no connection, or it broke (refused, reset, closed).
	KindConnection = "connection"
	// KindServerError: memcached answered SERVER_ERROR.
	KindServerError = "server_error"
	// KindOther: anything else.
	KindOther = "other"
)

// Kinds lists every kind, in the order ErrorKind tests them.
var Kinds = []string{
	KindFenced, KindRejected, KindContended, KindCanceled, KindTimeout, KindConnection, KindServerError, KindOther,
}

func kindList() string { return strings.Join(Kinds, ", ") }

// ErrorKind classifies an error of a memcached write or read (see Kinds).
func ErrorKind(err error) string {
	var timeout interface{ Timeout() bool }
	var opErr *net.OpError
	var connTimeout *memcache.ConnectTimeoutError
	switch {
	case errors.Is(err, memfence.ErrFenced):
		return KindFenced
	case errors.Is(err, memfence.ErrRejected):
		return KindRejected
	case errors.Is(err, memfence.ErrContended):
		return KindContended
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return KindCanceled
	case errors.As(err, &connTimeout), errors.As(err, &timeout) && timeout.Timeout():
		return KindTimeout
	case errors.As(err, &opErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, memcache.ErrNoServers):
		return KindConnection
	case errors.Is(err, memcache.ErrServerError), err != nil && strings.Contains(err.Error(), "SERVER_ERROR"):
		return KindServerError
	}
	return KindOther
}
