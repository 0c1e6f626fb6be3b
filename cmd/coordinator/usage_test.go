package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Usage errors keep their cause, whatever their message shows, so that it
// can be tested with errors.Is.
func TestUsageErrorsWrapTheirCause(t *testing.T) {
	cases := []struct {
		args []string
		want error
	}{
		{args: []string{"submit", "--as", "a/b", "set", "k", "v"}, want: keyspace.ErrInvalidName},
		{args: []string{"status", "--namespace", "a b"}, want: keyspace.ErrInvalidName},
		{args: []string{"serve", "--node-id", "a/b"}, want: keyspace.ErrInvalidName},
		{args: []string{"bench", "--memcached", "127.0.0.1:1", "--scenarios", "nope"}, want: config.ErrBadConfig},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		root := newRootCommand(strings.NewReader(""), io.Discard, io.Discard)
		root.SetArgs(c.args)
		_, err := root.ExecuteContextC(ctx)
		cancel()
		var ue *usageError
		if !errors.As(err, &ue) || !errors.Is(err, c.want) {
			t.Errorf("%q: got %v, want a usage error wrapping %v", c.args, err, c.want)
		}
	}
}

// Argument errors, cobra's own commands' included, are usage errors by
// value.
func TestArgumentErrorsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"serve", "x"}, {"completion", "bash", "x"}} {
		root := newRootCommand(strings.NewReader(""), io.Discard, io.Discard)
		root.SetArgs(args)
		_, err := root.ExecuteContextC(context.Background())
		var ue *usageError
		if !errors.Is(err, errUsage) || !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", args, err)
		}
	}
}
