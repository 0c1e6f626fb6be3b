package config_test

import (
	"errors"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

func TestFieldError(t *testing.T) {
	err := config.Errorf("election", "LeaseTTL", "%s is under 2s", "1s")
	if got, want := err.Error(), "election: bad config: LeaseTTL: 1s is under 2s"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, config.ErrBadConfig) {
		t.Errorf("%v does not match ErrBadConfig", err)
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Pkg != "election" || fe.Field != "LeaseTTL" || fe.Rule != "1s is under 2s" || fe.Err != nil {
		t.Errorf("As: %+v", fe)
	}
}

func TestFieldErrorKeepsItsCause(t *testing.T) {
	cause := errors.New("invalid name")
	err := config.Errorf("client", "Namespace", "%w: %q", cause, "a/b")
	if !errors.Is(err, config.ErrBadConfig) || !errors.Is(err, cause) {
		t.Errorf("%v: want both ErrBadConfig and its cause", err)
	}
	if got, want := err.Error(), `client: bad config: Namespace: invalid name: "a/b"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	other := errors.New("other")
	two := config.Errorf("x", "F", "%w and %w", cause, other)
	if !errors.Is(two, cause) || !errors.Is(two, other) || !errors.Is(two, config.ErrBadConfig) {
		t.Errorf("%v: want every cause", two)
	}
	lit := &config.FieldError{Pkg: "registry", Field: "TTL", Rule: "10ms is under 1s", Err: cause}
	if !errors.Is(lit, config.ErrBadConfig) || !errors.Is(lit, cause) {
		t.Errorf("%v: a literal FieldError must match ErrBadConfig and its Err", lit)
	}
}
