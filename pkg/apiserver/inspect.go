package apiserver

import (
	"errors"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

// pageRequest is the inspect.PageRequest of a request's page_size and
// page_token; a negative size or a token that is not a next_page_token of
// the same call is INVALID.
func pageRequest(size int32, token string) (inspect.PageRequest, error) {
	req := inspect.PageRequest{Size: int(size), Token: token}
	if err := req.Validate(); err != nil {
		return req, inspectError(err)
	}
	return req, nil
}

// inspectError maps an error of pkg/inspect to a status: a bad page request
// is INVALID and names the request's field, anything else is mapped as
// every call's errors are.
func inspectError(err error) error {
	field := ""
	switch {
	case errors.Is(err, inspect.ErrBadPageToken):
		field = "page_token"
	case errors.Is(err, inspect.ErrBadPageSize):
		field = "page_size"
	default:
		return toStatus(err)
	}
	rule := err.Error()
	if fe := (*config.FieldError)(nil); errors.As(err, &fe) {
		rule = fe.Rule
	}
	return invalid("%s: %s", field, rule)
}
