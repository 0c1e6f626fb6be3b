package apiserver

import (
	"context"
	"math"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/tap"
)

// ServeGRPC serves gRPC alone on lis until ctx ends, with gRPC's own HTTP/2
// server: the caller API, grpc.health.v1.Health and server reflection, as
// Serve does, without HTTP/JSON (ServeJSON serves it on another
// listener). A stream costs the node one goroutine here, where through
// net/http it costs three, which is what a node holding thousands of
// KeepAlive streams is sized by.
//
// The limits of Config apply as they do in Serve: Config.TLS (its
// handshake made by gRPC, so that the client certificate authorizes names
// as in Serve), MaxStreamsPerConn, IdleTimeout (a connection carrying no
// call for that long is closed; one silent for a quarter of it is pinged,
// and closed if the ping goes unanswered), MaxConnectionAge (gRPC's GOAWAY;
// the streams under way go on, SubmitStream ends itself past the age as in
// Serve), and WriteTimeout, which bounds a call from its headers to its
// answer (a slow request message included), WaitApplied by MaxWait beyond
// it, the streams by nothing but their end. It returns nil once ctx ended
// and the server stopped.
func (s *Server) ServeGRPC(ctx context.Context, lis net.Listener) error {
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(min(s.cfg.MaxStreamsPerConn, math.MaxUint32))),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: s.cfg.IdleTimeout,
			// Born with a jitter of connBorn's, and aged by gRPC with a
			// tenth more of its own, so that connections of one start
			// spread their reconnections.
			MaxConnectionAge: s.cfg.MaxConnectionAge,
			Time:             s.cfg.IdleTimeout / 4,
			Timeout:          pingTimeout,
		}),
		// Clients that ping to keep their connection open through a
		// balancer are let be, down to every 10 s, streams or not.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.StatsHandler(connAge{s}),
		grpc.InTapHandle(s.callDeadline),
	}
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	gs, hs := s.grpcServer(opts...)
	return s.serveUntil(ctx, hs, func() error { return gs.Serve(lis) }, grpc.ErrServerStopped, func() {
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(shutdownTimeout):
			gs.Stop()
			<-stopped
		}
	})
}

// callDeadline is ServeGRPC's tap on every new stream: it bounds an
// ordinary call by Config.WriteTimeout from its headers, WaitApplied by
// MaxWait beyond that, and leaves the streams unbounded, as Serve's
// read and write deadlines do. The stream's context is cancelled when the
// call ends, which stops the deadline's timer with it.
func (s *Server) callDeadline(ctx context.Context, info *tap.Info) (context.Context, error) {
	stream, long := longCalls[info.FullMethodName]
	if stream {
		return ctx, nil
	}
	bound := s.cfg.WriteTimeout
	if long {
		bound += s.cfg.MaxWait
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	_ = cancel // called by the stream's context, its parent, when the call ends
	return ctx, nil
}

// connAge is ServeGRPC's stats handler that gives every connection's
// context its birth (connBornKey), which SubmitStream ends itself by.
type connAge struct{ s *Server }

func (c connAge) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connBornKey{}, c.s.connBorn())
}

func (connAge) HandleConn(context.Context, stats.ConnStats) {}

func (connAge) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (connAge) HandleRPC(context.Context, stats.RPCStats) {}
