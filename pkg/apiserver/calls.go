package apiserver

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/regwatch"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// DefaultOpsLimit is the most operations Ops lists when the request's
// limit is zero.
const DefaultOpsLimit = 1000

// MaxForgetReceipts bounds the batch ids of one ForgetReceipts call.
const MaxForgetReceipts = 1000

// Register registers the name under a new lease (registry.RegisterLease).
// The lease is the caller's to keep alive (KeepAlive, KeepAliveOnce).
func (s *Server) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	name := req.GetName()
	if err := keyspace.ValidateName(name); err != nil {
		return nil, invalid("name: %v", err)
	}
	if err := s.allow(ctx, name); err != nil {
		return nil, err
	}
	if n := len(req.GetHolderHost()); n > registry.MaxHolderHost {
		return nil, invalid("holder_host: %d bytes, at most %d", n, registry.MaxHolderHost)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if _, err := registry.TTLSeconds(ttl); err != nil {
		return nil, invalid("ttl_seconds: %v", err)
	}
	holder := registry.Holder{Host: req.GetHolderHost(), PID: int(req.GetHolderPid()), Started: time.Now().UTC().Truncate(time.Millisecond)}
	if holder.Host == "" {
		holder.Host = remoteHost(ctx)
	}
	release, err := s.lim.admit(ctx, true)
	if err != nil {
		return nil, err
	}
	defer release()
	made, err := s.lim.reserveRegistration()
	if err != nil {
		return nil, err
	}
	reg, err := s.reg.RegisterLease(ctx, name, registry.RegisterConfig{
		TTL: ttl, IfAbsent: req.GetIfAbsent(), WaitDrained: req.GetWaitDrained(), Holder: holder,
	})
	made(int64(reg.LeaseID), reg.TTL)
	if err != nil {
		return nil, toStatus(err)
	}
	s.auditRegistered(ctx, reg)
	return &pb.RegisterResponse{Incarnation: reg.Incarnation, LeaseId: int64(reg.LeaseID), TtlSeconds: int32(reg.TTL / time.Second)}, nil
}

// check verifies that incarnation inc of name is current and lives under
// lease.
func (s *Server) check(ctx context.Context, name string, inc, lease int64) error {
	if err := s.checkArgs(ctx, name, inc, lease); err != nil {
		return err
	}
	return s.checkCurrent(ctx, name, inc, lease)
}

// checkArgs is check's part that reads nothing: the name is valid and
// allowed to the caller, the incarnation and lease given.
func (s *Server) checkArgs(ctx context.Context, name string, inc, lease int64) error {
	if err := keyspace.ValidateName(name); err != nil {
		return invalid("name: %v", err)
	}
	if err := s.allow(ctx, name); err != nil {
		return err
	}
	if inc <= 0 || lease == 0 {
		return invalid("incarnation and lease_id are required")
	}
	return nil
}

// checkCurrent is check's read of the registration.
func (s *Server) checkCurrent(ctx context.Context, name string, inc, lease int64) error {
	resp, err := s.cli.Get(ctx, s.layout.Reg(name))
	if err != nil {
		return toStatus(err)
	}
	if len(resp.Kvs) == 0 {
		return expired(name, inc)
	}
	kv := resp.Kvs[0]
	switch {
	case kv.ModRevision > inc:
		return superseded(name, inc, kv.ModRevision)
	case kv.ModRevision < inc:
		return expired(name, inc)
	case kv.Lease != lease:
		return invalid("lease_id %d is not the lease of %q incarnation %d", lease, name, inc)
	}
	return nil
}

// KeepAlive keeps the lease alive while the stream lasts; see the proto.
//
// A node holds thousands of these streams, mostly idle, so a stream holds
// no goroutine but its own: its lease is renewed by the node's one
// leasekeeper.Keeper, with every other stream's, and its registration
// watched by the node's one regwatch.Watcher.
func (s *Server) KeepAlive(req *pb.KeepAliveRequest, stream pb.Coordinator_KeepAliveServer) error {
	ctx := stream.Context()
	name, inc, lease := req.GetName(), req.GetIncarnation(), req.GetLeaseId()
	if s.isStopping() {
		return apierr.New(apierr.ReasonUnavailable, "node is stopping", nil)
	}
	if err := s.checkArgs(ctx, name, inc, lease); err != nil {
		return err
	}
	closed, err := s.lim.openStream()
	if err != nil {
		return err
	}
	defer closed()
	// Subscribed before the registration is read: a change committed
	// before the read shows in it, any later one is signalled.
	changes, unsubscribe, err := s.regs.Subscribe(ctx, name, inc)
	if err != nil {
		return s.stoppingOr(toStatus(err))
	}
	defer unsubscribe()
	if err := s.checkCurrent(ctx, name, inc, lease); err != nil {
		return err
	}
	renewals, stop := s.leases.Keep(clientv3.LeaseID(lease))
	defer stop()
	s.lim.stats.KeptAlive.Add(1)
	defer s.lim.stats.KeptAlive.Add(-1)
	for {
		select {
		case <-s.stopping:
			return errStoppingStream
		case <-ctx.Done():
			// The caller went away, or its connection did: the lease runs
			// out by its TTL unless kept alive again (through any node).
			// Only Unregister revokes it.
			return ctx.Err()
		case ttl, ok := <-renewals:
			if !ok {
				// The lease is gone, or went unrenewed for its TTL.
				return s.stoppingOr(s.ended(ctx, name, inc))
			}
			s.lim.renewedRegistration(lease, time.Duration(ttl)*time.Second)
			if err := stream.Send(&pb.KeepAliveResponse{TtlSeconds: int32(ttl)}); err != nil {
				return err
			}
		case sig, ok := <-changes:
			switch {
			case !ok:
				return s.stoppingOr(apierr.New(apierr.ReasonUnavailable, "node stopped watching registrations", nil))
			case sig == regwatch.Changed:
				return s.ended(ctx, name, inc)
			case sig == regwatch.Recheck:
				if err := s.checkCurrent(ctx, name, inc, lease); err != nil {
					return err
				}
			}
		}
	}
}

// errStoppingStream ends the KeepAlive streams of a node that stops.
var errStoppingStream = apierr.New(apierr.ReasonUnavailable, "node is stopping; keep the lease alive through another node", nil)

// stoppingOr is errStoppingStream once the node stops (its lease keeper
// and registration watcher closing end the streams too), err before.
func (s *Server) stoppingOr(err error) error {
	if s.isStopping() {
		return errStoppingStream
	}
	return err
}

// isStopping reports whether Close was called.
func (s *Server) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// ended is the status that ends a KeepAlive stream whose renewals or
// registration watch said the incarnation may be over: SUPERSEDED,
// EXPIRED, or UNAVAILABLE when it is still registered after all.
func (s *Server) ended(ctx context.Context, name string, inc int64) error {
	resp, err := s.cli.Get(ctx, s.layout.Reg(name))
	if err != nil {
		return toStatus(err)
	}
	switch {
	case len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision > inc:
		return superseded(name, inc, resp.Kvs[0].ModRevision)
	case len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision == inc:
		// Still registered: the renewals went unanswered for a TTL (etcd
		// slow or out of reach) and the lease did not run out after all.
		// The caller keeps it alive again, here or through another node.
		return apierr.New(apierr.ReasonUnavailable, "the lease's renewals went unanswered for its TTL; keep it alive again", nil)
	}
	return expired(name, inc)
}

// KeepAliveOnce renews the lease once.
func (s *Server) KeepAliveOnce(ctx context.Context, req *pb.KeepAliveRequest) (*pb.KeepAliveResponse, error) {
	release, err := s.lim.admit(ctx, false)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.check(ctx, req.GetName(), req.GetIncarnation(), req.GetLeaseId()); err != nil {
		return nil, err
	}
	resp, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(req.GetLeaseId()))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil, expired(req.GetName(), req.GetIncarnation())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.lim.renewedRegistration(req.GetLeaseId(), time.Duration(resp.TTL)*time.Second)
	return &pb.KeepAliveResponse{TtlSeconds: int32(resp.TTL)}, nil
}

// Unregister revokes the incarnation's lease; an incarnation that has
// expired already is not an error.
func (s *Server) Unregister(ctx context.Context, req *pb.UnregisterRequest) (*pb.UnregisterResponse, error) {
	release, err := s.lim.admit(ctx, false)
	if err != nil {
		return nil, err
	}
	defer release()
	err = s.check(ctx, req.GetName(), req.GetIncarnation(), req.GetLeaseId())
	switch apierr.ReasonOf(err) {
	case "":
	case apierr.ReasonExpired:
		return &pb.UnregisterResponse{}, nil
	default:
		return nil, err
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(req.GetLeaseId())); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil, toStatus(err)
	}
	s.lim.forgetRegistration(req.GetLeaseId())
	s.audit(ctx, "unregister", req.GetName(), "incarnation", req.GetIncarnation())
	return &pb.UnregisterResponse{}, nil
}

// batchOf converts the request's operations; its errors are INVALID.
func batchOf(in []*pb.Op) ([]ops.Op, error) {
	if len(in) == 0 {
		return nil, invalid("%v", ops.ErrEmptyBatch)
	}
	out := make([]ops.Op, 0, len(in))
	for i, o := range in {
		switch {
		case o.GetSet() != nil:
			set := o.GetSet()
			if set.GetData() == nil {
				return nil, invalid("ops[%d]: set needs a value or a text", i)
			}
			value := set.GetValue()
			if _, ok := set.GetData().(*pb.SetOp_Text); ok {
				value = []byte(set.GetText())
			}
			if value == nil {
				value = []byte{}
			}
			out = append(out, ops.Set(set.GetKey(), value, time.Duration(set.GetExpirationSeconds())*time.Second))
		case o.GetDelete() != nil:
			out = append(out, ops.Delete(o.GetDelete().GetKey()))
		default:
			return nil, invalid("ops[%d]: neither set nor delete", i)
		}
	}
	return out, nil
}

// Submit stores one batch under the incarnation; see the proto.
func (s *Server) Submit(ctx context.Context, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	return s.submit(ctx, callerIdentity(ctx), req)
}

// submit is Submit, its rate and concurrency limited as a call of the
// caller identity given; SubmitStream submits each of its submissions with
// the stream's identity.
func (s *Server) submit(ctx context.Context, identity string, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	name := req.GetName()
	if err := keyspace.ValidateName(name); err != nil {
		return nil, invalid("name: %v", err)
	}
	if err := s.allow(ctx, name); err != nil {
		return nil, err
	}
	if req.GetIncarnation() <= 0 {
		return nil, invalid("incarnation is required")
	}
	if req.GetBatchId() != "" && req.GetLeaseId() == 0 {
		// Without the lease no receipt is kept, and a resend of an applied
		// batch would be stored again (G3).
		return nil, invalid("batch_id needs lease_id, the incarnation's lease, so that a resend is recognised after the batch is applied")
	}
	release, err := s.lim.admitAs(identity, false)
	if err != nil {
		return nil, err
	}
	defer release()
	batch, err := batchOf(req.GetOps())
	if err != nil {
		return nil, err
	}
	if err := ops.ValidateBatch(batch, s.sub.Limits()); err != nil {
		return nil, toStatus(err)
	}
	id := req.GetBatchId()
	if id == "" {
		id = tokenseq.NewBatchID()
	} else if err := keyspace.ValidateName(id); err != nil {
		return nil, invalid("batch_id: %v", err)
	}
	treq := tokenseq.Request{
		Name: name, Incarnation: req.GetIncarnation(), ID: id, Ops: batch, Lease: clientv3.LeaseID(req.GetLeaseId()),
	}
	tok, err := s.sub.SubmitSettled(ctx, treq, nil)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.SubmitResponse{Token: tok.String(), BatchId: id}, nil
}

// ForgetReceipts deletes receipts of the incarnation's batches.
func (s *Server) ForgetReceipts(ctx context.Context, req *pb.ForgetReceiptsRequest) (*pb.ForgetReceiptsResponse, error) {
	name := req.GetName()
	if err := keyspace.ValidateName(name); err != nil {
		return nil, invalid("name: %v", err)
	}
	if err := s.allow(ctx, name); err != nil {
		return nil, err
	}
	if n := len(req.GetBatchIds()); n > MaxForgetReceipts {
		return nil, invalid("batch_ids: %d ids, at most %d a call", n, MaxForgetReceipts)
	}
	release, err := s.lim.admit(ctx, false)
	if err != nil {
		return nil, err
	}
	defer release()
	for i, id := range req.GetBatchIds() {
		if err := keyspace.ValidateName(id); err != nil {
			return nil, invalid("batch_ids[%d]: %v", i, err)
		}
	}
	if err := s.sub.DeleteReceipts(ctx, name, req.GetIncarnation(), req.GetBatchIds()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.ForgetReceiptsResponse{}, nil
}

// WaitApplied waits until the token is applied.
func (s *Server) WaitApplied(ctx context.Context, req *pb.WaitAppliedRequest) (*pb.WaitAppliedResponse, error) {
	tok, err := tokenseq.ParseToken(req.GetToken())
	if err != nil || tok.IsZero() {
		return nil, invalid("token: %q is not a token (REVISION or REVISION.INDEX)", req.GetToken())
	}
	wait := s.cfg.MaxWait
	if ms := req.GetTimeoutMs(); ms > 0 {
		wait = min(wait, time.Duration(ms)*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.applied.Wait(ctx, tok); err != nil {
		return nil, toStatus(err)
	}
	return &pb.WaitAppliedResponse{}, nil
}

// Status summarises the namespace (pkg/inspect).
func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	release, err := s.lim.admit(ctx, false)
	if err != nil {
		return nil, err
	}
	defer release()
	st, err := s.insp.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StatusResponse{
		Namespace: st.Namespace, Leader: st.Leader, Term: st.Term, Applied: st.Applied.String(),
		PendingBatches: int64(st.PendingBatches), PendingOps: int64(st.PendingOps), PendingOpsLowerBound: st.PendingOpsLowerBound,
		Registrations: int64(st.Registrations), Quarantined: st.Quarantined,
	}, nil
}

// Registrations lists one page of the registrations view (pkg/inspect).
func (s *Server) Registrations(ctx context.Context, req *pb.RegistrationsRequest) (*pb.RegistrationsResponse, error) {
	release, err := s.lim.admit(ctx, false)
	if err != nil {
		return nil, err
	}
	defer release()
	preq, err := pageRequest(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	page, err := s.insp.RegistrationsPage(ctx, preq)
	if err != nil {
		return nil, inspectError(err)
	}
	out := &pb.RegistrationsResponse{
		Registrations: make([]*pb.Registration, 0, len(page.Registrations)), NextPageToken: page.NextToken,
	}
	for _, v := range page.Registrations {
		out.Registrations = append(out.Registrations, &pb.Registration{
			Name: v.Name, Incarnation: v.Incarnation, Status: v.Status,
			Pending: int64(v.Pending), PendingLowerBound: v.PendingLowerBound,
			HolderHost: v.Holder.Host, HolderPid: int32(v.Holder.PID), TtlLeftSeconds: int64(v.TTLLeft / time.Second),
		})
	}
	return out, nil
}

// Ops lists one page of the pending operations (pkg/inspect), with their
// count.
func (s *Server) Ops(ctx context.Context, req *pb.OpsRequest) (*pb.OpsResponse, error) {
	release, err := s.lim.admit(ctx, false)
	if err != nil {
		return nil, err
	}
	defer release()
	size := req.GetPageSize()
	if size == 0 {
		// limit is the page size of callers that predate paging.
		switch size = req.GetLimit(); {
		case size < 0:
			return nil, invalid("limit: %d is negative", size)
		case size == 0:
			size = DefaultOpsLimit
		}
	}
	preq, err := pageRequest(size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	page, err := s.insp.OpsPage(ctx, preq)
	if err != nil {
		return nil, inspectError(err)
	}
	count, err := s.insp.CountPending(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.OpsResponse{
		Total: int64(count.Ops), TotalLowerBound: count.OpsLowerBound,
		Undecodable: page.Undecodable, NextPageToken: page.NextToken,
		Ops: make([]*pb.PendingOp, 0, len(page.Ops)),
	}
	for _, o := range page.Ops {
		out.Ops = append(out.Ops, &pb.PendingOp{
			Token: o.Token.String(), Index: int32(o.Index), Name: o.Name, Incarnation: o.Incarnation,
			Op: o.Op, Key: o.Key, ValueBytes: int64(o.ValueBytes),
		})
	}
	return out, nil
}
