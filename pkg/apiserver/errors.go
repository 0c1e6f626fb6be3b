package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// invalid is the status of bad input.
func invalid(format string, args ...any) error { return apierr.Invalid(format, args...) }

// denied is the status of a call that may not act as name.
func denied(name, why string) error {
	return apierr.New(apierr.ReasonPermissionDenied,
		fmt.Sprintf("may not act as %q: %s", name, why), map[string]string{"name": name})
}

// expired is the status of an incarnation whose lease is gone.
func expired(name string, inc int64) error {
	return apierr.New(apierr.ReasonExpired, fmt.Sprintf("%q incarnation %d expired", name, inc),
		map[string]string{"name": name, "incarnation": strconv.FormatInt(inc, 10)})
}

// superseded is the status of an incarnation replaced by current (zero:
// unknown).
func superseded(name string, inc, current int64) error {
	meta := map[string]string{"name": name, "incarnation": strconv.FormatInt(inc, 10)}
	msg := fmt.Sprintf("%q incarnation %d superseded", name, inc)
	if current != 0 {
		meta["current"] = strconv.FormatInt(current, 10)
		msg += fmt.Sprintf(" by incarnation %d", current)
	}
	return apierr.New(apierr.ReasonSuperseded, msg, meta)
}

// toStatus maps an error of the packages the server calls to a status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && apierr.ReasonOf(err) != "" {
		return err
	}
	var refused *tokenseq.RefusedError
	switch {
	case errors.As(err, &refused) && errors.Is(err, tokenseq.ErrSuperseded):
		return superseded(refused.Name, refused.Incarnation, refused.Current)
	case errors.As(err, &refused):
		return expired(refused.Name, refused.Incarnation)
	case errors.Is(err, rpctypes.ErrNoSpace):
		return apierr.New(apierr.ReasonNoSpace, "etcd is out of space (NOSPACE alarm) and refuses every write: "+err.Error(), nil)
	case errors.Is(err, ops.ErrInvalid), errors.Is(err, keyspace.ErrInvalidName), errors.Is(err, registry.ErrBadHolder),
		errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, registry.ErrBadTTL),
		errors.Is(err, config.ErrBadConfig), errors.Is(err, tokenseq.ErrBadToken):
		return invalid("%v", err)
	case errors.Is(err, registry.ErrNameHeld):
		return apierr.New(apierr.ReasonNameHeld, err.Error(), nil)
	case errors.Is(err, tokenseq.ErrVoided), errors.Is(err, tokenseq.ErrNotAccepted):
		return apierr.New(apierr.ReasonNotAccepted, err.Error()+"; resend under a new batch id", nil)
	case errors.Is(err, tokenseq.ErrOutcomeUnknown):
		return apierr.New(apierr.ReasonOutcomeUnknown, err.Error(), nil)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return apierr.New(apierr.ReasonPermissionDenied, err.Error(), nil)
	case errors.Is(err, context.DeadlineExceeded):
		return apierr.New(apierr.ReasonTimeout, err.Error(), nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return apierr.New(apierr.ReasonUnavailable, err.Error(), nil)
}
