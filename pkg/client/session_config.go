package client

import (
	"context"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// SessionConfig configures NewSession. Zero values mean the defaults noted:
// a zero SessionConfig waits for the drain barrier, resends refused
// submissions and stores receipts. TTL, Holder and IfAbsent mean what they
// mean in RegisterConfig.
type SessionConfig struct {
	// TTL is the lease TTL of every incarnation, at least 1s; zero means
	// DefaultTTL.
	TTL time.Duration
	// Holder overrides the holder metadata; zero means the current process.
	Holder registry.Holder
	// IfAbsent makes the first registration fail with ErrNameHeld when a
	// live incarnation of the name exists; by default it supersedes it.
	// Re-registrations never supersede: a live holder of the name then
	// means the session was superseded.
	IfAbsent bool
	// SkipDrain makes registrations return at once. By default every
	// registration, the first and each re-registration, waits until every
	// operation of the name's earlier incarnations is applied (G7) before
	// the session sends anything under it. Applying needs a running
	// coordinator leader: with none, a re-registration waits until one runs,
	// and submissions wait with it.
	SkipDrain bool
	// NoRetry returns a submission refused because its incarnation expired
	// (ErrExpired) to the caller. By default it is resent under the next
	// incarnation. The session re-registers either way. A submission whose
	// outcome is unknown is never resent without a lookup.
	NoRetry bool
	// NoReceipts stores batches without a receipt. By default every batch
	// comes with a receipt under the incarnation's lease, so that a
	// submission whose reply was lost can be looked up even after its batch
	// was applied and deleted. Cost: one small key per submission, put in
	// the same transaction as the batch and deleted (up to 100 per
	// transaction) once the reply arrived; receipts not yet deleted go with
	// the lease. Without receipts a lost reply can be
	// settled only while the batch is still pending; otherwise the
	// submission fails with ErrOutcomeUnknown.
	NoReceipts bool
	// OnEvent, when set, is called with each Event, one at a time and in
	// order, on a goroutine of the session. It must not block for long.
	OnEvent func(Event)

	hooks *sessionHooks
}

// Validate checks the config; its errors match ErrBadConfig and name the
// field.
func (c *SessionConfig) Validate() error { return validateTTL(c.TTL) }

// registerConfig is the registry config of a registration of the session:
// the first, or a re-registration (which never supersedes).
func (c *SessionConfig) registerConfig(first bool) registry.RegisterConfig {
	return registry.RegisterConfig{
		TTL: c.TTL, Holder: c.Holder, IfAbsent: c.IfAbsent || !first, WaitDrained: !c.SkipDrain,
	}
}

// sessionHooks let tests step into a session.
type sessionHooks struct {
	// send replaces the submission transaction; submit runs the real one.
	send func(ctx context.Context, req tokenseq.Request, submit func() (Token, error)) (Token, error)
	// beforeRegister runs before each re-registration attempt.
	beforeRegister func(old int64)
}
