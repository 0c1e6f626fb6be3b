package apiserver

import (
	"context"
	"log/slog"

	"github.com/coordinator-dev/coordinator/pkg/registry"
)

// audit logs an event that changes who holds a name, or a refusal of who
// may: at INFO with audit=true, the caller's identity (its verified
// certificate's subject, or its address) and address, so that an operator
// can tell who registered, took over or unregistered a name.
func (s *Server) audit(ctx context.Context, event, name string, attrs ...any) {
	base := []any{"audit", true, "event", event, "name", name, "identity", callerIdentity(ctx), "addr", remoteHost(ctx)}
	s.cfg.Logger.Log(ctx, slog.LevelInfo, "audit: "+event, append(base, attrs...)...)
}

// auditRegistered logs a registration, as a takeover when it superseded a
// live incarnation.
func (s *Server) auditRegistered(ctx context.Context, reg registry.Registration) {
	if reg.Superseded != 0 {
		s.audit(ctx, "takeover", reg.Name, "incarnation", reg.Incarnation, "superseded", reg.Superseded, "lease", int64(reg.LeaseID))
		return
	}
	s.audit(ctx, "register", reg.Name, "incarnation", reg.Incarnation, "lease", int64(reg.LeaseID))
}

// allow is authorize, with its refusals audited.
func (s *Server) allow(ctx context.Context, name string) error {
	err := s.authorize(ctx, name)
	if err != nil {
		s.audit(ctx, "permission_denied", name, "err", err.Error())
	}
	return err
}
