package apierr_test

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// TestEveryReasonRoundTrips checks that a refusal made by the server side
// reads back on the client side as its reason and sentinel, with its code.
func TestEveryReasonRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		reason string
		code   codes.Code
		err    error
	}{
		{apierr.ReasonInvalid, codes.InvalidArgument, apierr.ErrInvalid},
		{apierr.ReasonSuperseded, codes.Aborted, apierr.ErrSuperseded},
		{apierr.ReasonExpired, codes.NotFound, apierr.ErrExpired},
		{apierr.ReasonNameHeld, codes.AlreadyExists, apierr.ErrNameHeld},
		{apierr.ReasonNotAccepted, codes.Unavailable, apierr.ErrNotAccepted},
		{apierr.ReasonOutcomeUnknown, codes.Unknown, apierr.ErrOutcomeUnknown},
		{apierr.ReasonPermissionDenied, codes.PermissionDenied, apierr.ErrPermissionDenied},
		{apierr.ReasonUnavailable, codes.Unavailable, apierr.ErrUnavailable},
		{apierr.ReasonTimeout, codes.DeadlineExceeded, apierr.ErrTimeout},
		{apierr.ReasonTooLarge, codes.ResourceExhausted, apierr.ErrTooLarge},
		{apierr.ReasonExhausted, codes.ResourceExhausted, apierr.ErrExhausted},
		{apierr.ReasonNoSpace, codes.ResourceExhausted, apierr.ErrNoSpace},
	} {
		sent := apierr.New(tc.reason, "why", map[string]string{"current": "42"})
		if got := status.Code(sent); got != tc.code {
			t.Errorf("%s: code %v, want %v", tc.reason, got, tc.code)
		}
		got := apierr.FromStatus(sent)
		var e *apierr.Error
		if !errors.As(got, &e) || e.Reason != tc.reason || !errors.Is(got, tc.err) {
			t.Errorf("%s: read back as %v, want reason %s matching %v", tc.reason, got, tc.reason, tc.err)
			continue
		}
		if e.Current() != 42 {
			t.Errorf("%s: Current() = %d, want 42", tc.reason, e.Current())
		}
		for _, other := range []error{apierr.ErrInvalid, apierr.ErrExpired, apierr.ErrUnavailable} {
			if other != tc.err && errors.Is(got, other) {
				t.Errorf("%s also matches %v", tc.reason, other)
			}
		}
	}
	if apierr.ReasonOf(errors.New("plain")) != "" || apierr.ReasonOf(status.Error(codes.Internal, "x")) != "" {
		t.Error("an error without ErrorInfo has a reason")
	}
	if err := apierr.FromStatus(errors.New("plain")); err.Error() != "plain" {
		t.Errorf("a plain error came back as %v", err)
	}
}
