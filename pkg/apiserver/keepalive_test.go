package apiserver

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// A node holds a KeepAlive stream with one goroutine of its own: its lease
// is renewed on the node's one etcd lease stream and its registration
// watched by the node's one watch, however many streams there are. Each
// stream still ends alone when its registration changes, and all of them
// when the node stops.
func TestKeepAliveStreamsShareTheirRenewalsAndWatch(t *testing.T) {
	const streams = 300
	lifted := Config{RegisterRate: 1e6, RegisterBurst: 1e6, CallRate: 1e6, CallBurst: 1e6}
	s, api, _ := streamAPIWith(t, lifted, servings[1])
	ctx := testenv.Ctx(t, 120*time.Second)

	regs := make([]*pb.RegisterResponse, streams)
	for i := range regs {
		r, err := api.Register(ctx, &pb.RegisterRequest{Name: fmt.Sprintf("idle-%d", i), TtlSeconds: 30})
		if err != nil {
			t.Fatal(err)
		}
		regs[i] = r
	}
	// The first stream starts the node's lease stream and watch.
	open := func(i int) pb.Coordinator_KeepAliveClient {
		t.Helper()
		ka, err := api.KeepAlive(ctx, &pb.KeepAliveRequest{Name: fmt.Sprintf("idle-%d", i), Incarnation: regs[i].Incarnation, LeaseId: regs[i].LeaseId})
		if err != nil {
			t.Fatal(err)
		}
		if r, err := ka.Recv(); err != nil || r.TtlSeconds <= 0 {
			t.Fatalf("stream %d: first renewal %v, %v", i, r, err)
		}
		return ka
	}
	kas := []pb.Coordinator_KeepAliveClient{open(0)}
	before := runtime.NumGoroutine()
	for i := 1; i < streams; i++ {
		kas = append(kas, open(i))
	}
	// Each stream costs a goroutine on each side (the client's watches its
	// context): two in all. A lease keep-alive and a watch of each stream's
	// own on the node would make four.
	perStream := func() float64 { return float64(runtime.NumGoroutine()-before) / (streams - 1) }
	testenv.Eventually(t, 30*time.Second, func() bool { return perStream() < 2.5 },
		"goroutines per stream: %.2f, want about 2 (one the node's, one the client's)", perStream())
	if kept := s.lim.stats.KeptAlive.Load(); kept != streams {
		t.Errorf("coordinator_api_kept_alive %d, want %d", kept, streams)
	}

	// A new incarnation of one name ends that stream alone, SUPERSEDED.
	if _, err := api.Register(ctx, &pb.RegisterRequest{Name: "idle-7", TtlSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := kas[7].Recv()
		if err == nil {
			continue
		}
		if apierr.ReasonOf(err) != apierr.ReasonSuperseded {
			t.Fatalf("superseded stream ended with %v", err)
		}
		break
	}
	// The others are renewed on.
	if r, err := kas[8].Recv(); err != nil || r.TtlSeconds <= 0 {
		t.Fatalf("another stream after one was superseded: %v, %v", r, err)
	}

	s.Close()
	for i, ka := range kas {
		if i == 7 {
			continue
		}
		for {
			_, err := ka.Recv()
			if err == nil {
				continue
			}
			if status.Code(err) != codes.Unavailable || apierr.ReasonOf(err) != apierr.ReasonUnavailable {
				t.Fatalf("stream %d on a stopping node ended with %v", i, err)
			}
			break
		}
	}
}
