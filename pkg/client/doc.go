// Package client is what callers import to write to memcached through the
// coordinator. A Client talks to the coordinator's etcd. Every write is
// submitted under a registration name and, once accepted, gets a Token: the
// elected leader applies accepted operations to memcached in token order.
//
// What the package guarantees (docs/guarantees.md has the full text): an
// operation is accepted only if the incarnation it is sent under is current,
// checked in the transaction that stores it, and a refusal says why
// (ErrSuperseded or ErrExpired, G1). A batch is accepted or refused as a
// whole and applied in order, and the operations of one incarnation are
// applied before those of a later incarnation of the same name (G2). An
// accepted operation is applied even if the caller dies at once (G3, G4).
// Bad input is refused with an error wrapping ErrInvalid before anything is
// written. WaitApplied blocks until a token is in memcached (G8).
//
// A Caller, made by Client.Register, is one incarnation of a name: a lease
// and a registration key. It is the plain tool. When its lease is lost,
// every submission fails with ErrExpired for good, and deciding what to do
// next is left to the caller. Use a Caller for short-lived work that
// registers, submits and unregisters (the command-line tool), and where
// losing the lease must stop the work.
//
// A Session, made by Client.NewSession, owns a name for a whole process and
// is shared by all of its goroutines. It keeps the name registered: when the
// lease is lost it registers again exactly once however many submissions
// fail at the same moment, and resends the refused ones under the new
// incarnation (G9). A reply lost on the way is looked up, never resent
// blindly. Another process that registers the name ends the session for good
// (ErrSessionSuperseded). Use a Session for long-running processes.
//
// Both offer the same calls (Name, Incarnation, Set, Delete, Submit,
// WaitApplied, Done, Err, Close) and are configured the same way:
// RegisterConfig and SessionConfig name the fields they have in common
// alike (TTL, Holder, IfAbsent), every zero value is the documented default,
// and Validate names the field at fault. They differ in one default, the drain
// barrier of G7 (waiting until the name's earlier incarnations are applied
// before sending anything). A Session waits by default: it re-registers on
// its own, unseen by its callers, and the barrier makes everything accepted
// under the earlier incarnations reach memcached before anything is sent
// under the new one, so that its callers need not know that the incarnation
// changed; set SessionConfig.SkipDrain to not wait. A Caller does not wait
// unless RegisterConfig.WaitDrained is set, because the barrier needs a
// running leader and a Caller is also the tool for submitting while none
// runs. Either way token order applies the old operations first (G2); the
// barrier only makes the caller wait for it.
//
// Config.Security holds the TLS files and the etcd user of the connection
// New dials (package etcdconn): a private CA, a client certificate whose
// common name etcd takes as the user, or a user and password. New fails
// fast, with an error matching etcdconn.ErrUnreachable, etcdconn.ErrAuth or
// etcdconn.ErrTLS. With etcd's auth on, a caller's etcd user is best
// limited to the keys of its own name (package rbac); a write under a name
// the user may not write fails with ErrPermissionDenied and stores nothing.
//
//	c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:2379"}})
//	caller, err := c.Register(ctx, "agent-7", client.RegisterConfig{})
//	tok, err := caller.Set(ctx, "config", []byte("v2"), 0)
//	err = caller.WaitApplied(ctx, tok) // read your write (G8)
package client
