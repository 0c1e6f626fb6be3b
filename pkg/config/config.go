// Package config holds the error every package's Config.Validate returns.
//
// Each configurable package has a Config struct whose zero values mean the
// documented defaults, and a Validate method that checks it before use. A
// field that breaks a rule is reported as a *FieldError naming the package,
// the field and the rule; every FieldError matches ErrBadConfig with
// errors.Is, whichever package returned it.
package config

import (
	"errors"
	"fmt"
)

// ErrBadConfig is matched by every error a Validate method returns.
var ErrBadConfig = errors.New("bad config")

// FieldError is a Config field that breaks a rule.
type FieldError struct {
	// Pkg is the package whose Config holds the field ("applier").
	Pkg string
	// Field is the field's name ("MaxBatchesPerCommit").
	Field string
	// Rule is the rule broken, with the value given ("200 is over 127").
	Rule string
	// Err is the error the rule's check returned, if any
	// (keyspace.ErrInvalidName for a bad name, say); nil for most.
	Err error
}

// Error returns "<Pkg>: bad config: <Field>: <Rule>".
func (e *FieldError) Error() string {
	return e.Pkg + ": " + ErrBadConfig.Error() + ": " + e.Field + ": " + e.Rule
}

// Unwrap returns ErrBadConfig, and Err when it is set.
func (e *FieldError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBadConfig}
	}
	return []error{ErrBadConfig, e.Err}
}

// Errorf returns the *FieldError of pkg's field whose Rule is format and
// args formatted as fmt.Errorf does; an error an arg wraps with %w becomes
// its Err.
func Errorf(pkg, field, format string, args ...any) error {
	rule := fmt.Errorf(format, args...)
	fe := &FieldError{Pkg: pkg, Field: field, Rule: rule.Error()}
	switch u := rule.(type) {
	case interface{ Unwrap() error }:
		fe.Err = u.Unwrap()
	case interface{ Unwrap() []error }:
		fe.Err = rule
	}
	return fe
}
