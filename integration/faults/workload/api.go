package workload

import (
	"context"
	"errors"
	"time"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// registrar registers a caller's name: pkg/client straight to etcd, or a
// node's caller API.
type registrar interface {
	Register(ctx context.Context, name string, cfg client.RegisterConfig) (session, error)
}

// session is one incarnation of a name, whichever way it submits.
type session interface {
	Incarnation() int64
	SubmitWithID(ctx context.Context, id string, batch ...ops.Op) (tokenseq.Token, error)
	WaitApplied(ctx context.Context, tok tokenseq.Token) error
	Close(ctx context.Context) error
}

// etcdRegistrar registers through pkg/client.
type etcdRegistrar struct{ cli *client.Client }

func (r etcdRegistrar) Register(ctx context.Context, name string, cfg client.RegisterConfig) (session, error) {
	c, err := r.cli.Register(ctx, name, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// apiRegistrar registers through a node's caller API.
type apiRegistrar struct{ cli *apiclient.Client }

func (r apiRegistrar) Register(ctx context.Context, name string, cfg client.RegisterConfig) (session, error) {
	c, err := RegisterThroughAPI(ctx, r.cli, name, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// RegisterThroughAPI registers name through a node's caller API; the
// caller it returns submits with the workload's own batch ids.
func RegisterThroughAPI(ctx context.Context, cli *apiclient.Client, name string, cfg client.RegisterConfig) (APISession, error) {
	c, err := cli.Register(ctx, name, apiclient.RegisterConfig{TTL: cfg.TTL.Round(time.Second), WaitDrained: cfg.WaitDrained})
	if err != nil {
		return APISession{}, err
	}
	return APISession{Caller: c, cli: cli, name: name}, nil
}

// APISession submits with the workload's own batch ids (the values name
// the operation) through the raw API; apiclient.Caller picks ids itself.
type APISession struct {
	*apiclient.Caller
	cli  *apiclient.Client
	name string
}

// SubmitWithID submits batch under the batch id id, with the lease, so
// that a resend is recognised.
func (s APISession) SubmitWithID(ctx context.Context, id string, batch ...ops.Op) (tokenseq.Token, error) {
	req := &pb.SubmitRequest{Name: s.name, Incarnation: s.Incarnation(), BatchId: id, LeaseId: s.LeaseID()}
	for _, o := range batch {
		switch o.Kind {
		case ops.KindSet:
			req.Ops = append(req.Ops, &pb.Op{Op: &pb.Op_Set{Set: &pb.SetOp{Key: o.Key, Data: &pb.SetOp_Value{Value: o.Value}}}})
		case ops.KindDelete:
			req.Ops = append(req.Ops, &pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Key: o.Key}}})
		}
	}
	r, err := s.cli.API().Submit(ctx, req)
	if err != nil {
		return tokenseq.Zero, err
	}
	return tokenseq.ParseToken(r.Token)
}

// refused reports whether err is a refusal that leaves nothing accepted
// (superseded or expired), from pkg/client or from the API (a gRPC status
// whose reason says so).
func refused(err error) bool {
	if errors.Is(err, client.ErrSuperseded) || errors.Is(err, client.ErrExpired) {
		return true
	}
	switch apierr.ReasonOf(err) {
	case apierr.ReasonSuperseded, apierr.ReasonExpired:
		return true
	}
	return false
}
