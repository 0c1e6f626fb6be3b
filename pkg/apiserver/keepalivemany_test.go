package apiserver

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
)

// manyStream reads a KeepAliveMany stream's responses in the background:
// the renewals counted by name, the ends by name.
type manyStream struct {
	t       *testing.T
	stream  pb.Coordinator_KeepAliveManyClient
	renewed chan *pb.KeptAlive
	ended   chan *pb.KeepAliveEnded
	done    chan error
}

func openMany(t *testing.T, ctx context.Context, api pb.CoordinatorClient) *manyStream {
	t.Helper()
	stream, err := api.KeepAliveMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := &manyStream{t: t, stream: stream, renewed: make(chan *pb.KeptAlive, 100000), ended: make(chan *pb.KeepAliveEnded, 1000), done: make(chan error, 1)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				m.done <- err
				return
			}
			for _, r := range resp.GetRenewed() {
				m.renewed <- r
			}
			for _, e := range resp.GetEnded() {
				m.ended <- e
			}
		}
	}()
	return m
}

func (m *manyStream) send(req *pb.KeepAliveManyRequest) {
	m.t.Helper()
	if err := m.stream.Send(req); err != nil {
		m.t.Fatal(err)
	}
}

// renewedAll waits until every name of names is renewed at least once.
func (m *manyStream) renewedAll(names map[string]bool) {
	m.t.Helper()
	left := map[string]bool{}
	for n := range names {
		left[n] = true
	}
	deadline := time.After(30 * time.Second)
	for len(left) > 0 {
		select {
		case r := <-m.renewed:
			if r.TtlSeconds <= 0 {
				m.t.Fatalf("renewal of %s with TTL %d", r.Name, r.TtlSeconds)
			}
			delete(left, r.Name)
		case e := <-m.ended:
			m.t.Fatalf("%s incarnation %d ended: %v", e.Name, e.Incarnation, e.Error)
		case err := <-m.done:
			m.t.Fatalf("stream ended: %v", err)
		case <-deadline:
			m.t.Fatalf("%d names not renewed within 30 s", len(left))
		}
	}
}

// nextEnd waits for the next end, skipping renewals.
func (m *manyStream) nextEnd() *pb.KeepAliveEnded {
	m.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-m.renewed:
		case e := <-m.ended:
			return e
		case err := <-m.done:
			m.t.Fatalf("stream ended: %v", err)
		case <-deadline:
			m.t.Fatal("no end within 30 s")
		}
	}
}

func endErr(e *pb.KeepAliveEnded) error {
	return resultErr(&pb.StreamResult{Error: e.GetError()})
}

// One KeepAliveMany stream keeps many incarnations alive with two
// goroutines of the node's in all; each ends alone, with the status
// KeepAlive would end with, when it is superseded, revoked, or refused
// at its add; a removed one is left to its TTL; the node stopping ends
// the stream UNAVAILABLE.
func TestKeepAliveManyKeepsManyOnOneStream(t *testing.T) {
	const n = 300
	lifted := Config{RegisterRate: 1e6, RegisterBurst: 1e6, CallRate: 1e6, CallBurst: 1e6}
	s, api, cli := streamAPIWith(t, lifted, servings[1])
	ctx := testenv.Ctx(t, 120*time.Second)
	regs := map[string]*pb.RegisterResponse{}
	names := map[string]bool{}
	add := &pb.KeepAliveManyRequest{}
	for i := range n {
		name := fmt.Sprintf("many-%d", i)
		r, err := api.Register(ctx, &pb.RegisterRequest{Name: name, TtlSeconds: 6})
		if err != nil {
			t.Fatal(err)
		}
		regs[name], names[name] = r, true
		add.Add = append(add.Add, &pb.KeepAliveRequest{Name: name, Incarnation: r.Incarnation, LeaseId: r.LeaseId})
	}
	before := runtime.NumGoroutine()
	m := openMany(t, ctx, api)
	m.send(add)
	m.send(&pb.KeepAliveManyRequest{Add: add.Add[:10]}) // already on the stream: left as they are
	m.renewedAll(names)
	// Renewed on, past a TTL since the first registration.
	m.renewedAll(names)
	m.renewedAll(names)
	for _, name := range []string{"many-0", "many-150", "many-299"} {
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(regs[name].LeaseId))
		if err != nil || ttl.TTL <= 0 {
			t.Fatalf("%s's lease renewed on: %v, %v", name, ttl, err)
		}
	}
	if grown := runtime.NumGoroutine() - before; grown > 20 {
		t.Errorf("%d goroutines more for one stream of %d incarnations", grown, n)
	}
	if kept := s.lim.stats.KeptAlive.Load(); kept != n {
		t.Errorf("coordinator_api_kept_alive %d, want %d", kept, n)
	}

	// Superseded: that one ends SUPERSEDED.
	if _, err := api.Register(ctx, &pb.RegisterRequest{Name: "many-7", TtlSeconds: 2}); err != nil {
		t.Fatal(err)
	}
	if e := m.nextEnd(); e.Name != "many-7" || apierr.ReasonOf(endErr(e)) != apierr.ReasonSuperseded {
		t.Fatalf("after a supersede: %v", e)
	}
	// Added again, the superseded incarnation is refused SUPERSEDED.
	m.send(&pb.KeepAliveManyRequest{Add: []*pb.KeepAliveRequest{{Name: "many-7", Incarnation: regs["many-7"].Incarnation, LeaseId: regs["many-7"].LeaseId}}})
	if e := m.nextEnd(); e.Name != "many-7" || apierr.ReasonOf(endErr(e)) != apierr.ReasonSuperseded {
		t.Fatalf("an add of a superseded incarnation: %v", e)
	}
	// Revoked: EXPIRED.
	if _, err := api.Unregister(ctx, &pb.UnregisterRequest{Name: "many-8", Incarnation: regs["many-8"].Incarnation, LeaseId: regs["many-8"].LeaseId}); err != nil {
		t.Fatal(err)
	}
	if e := m.nextEnd(); e.Name != "many-8" || apierr.ReasonOf(endErr(e)) != apierr.ReasonExpired {
		t.Fatalf("after an unregister: %v", e)
	}
	// Refused adds: another incarnation's lease, a bad name.
	m.send(&pb.KeepAliveManyRequest{Add: []*pb.KeepAliveRequest{
		{Name: "many-9", Incarnation: regs["many-9"].Incarnation, LeaseId: regs["many-10"].LeaseId},
	}})
	if e := m.nextEnd(); e.Name != "many-9" || apierr.ReasonOf(endErr(e)) != apierr.ReasonInvalid {
		t.Fatalf("an add with a foreign lease: %v", e)
	}
	// many-9 was on the stream already, so the refused add left it there.
	m.send(&pb.KeepAliveManyRequest{Add: []*pb.KeepAliveRequest{{Name: "bad name", Incarnation: 1, LeaseId: 1}}})
	if e := m.nextEnd(); e.Name != "bad name" || apierr.ReasonOf(endErr(e)) != apierr.ReasonInvalid {
		t.Fatalf("an add with a bad name: %v", e)
	}
	// Removed: no longer renewed, its lease runs out by its TTL.
	r11 := regs["many-11"]
	m.send(&pb.KeepAliveManyRequest{Remove: []*pb.KeepAliveRequest{{Name: "many-11", Incarnation: r11.Incarnation}}})
	testenv.Eventually(t, 20*time.Second, func() bool {
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(r11.LeaseId))
		return err == nil && ttl.TTL == -1
	}, "the removed incarnation's lease still lives")
	delete(names, "many-7")
	delete(names, "many-8")
	delete(names, "many-11")
	m.renewedAll(names)
	if kept := s.lim.stats.KeptAlive.Load(); kept != int64(len(names)) {
		t.Errorf("coordinator_api_kept_alive %d after three ends, want %d", kept, len(names))
	}

	s.Close()
	select {
	case err := <-m.done:
		if status.Code(err) != codes.Unavailable || apierr.ReasonOf(err) != apierr.ReasonUnavailable {
			t.Fatalf("the stream on a stopping node ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream outlived the node's stop by 20 s")
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return s.lim.stats.KeptAlive.Load() == 0 },
		"coordinator_api_kept_alive %d after the stream ended", s.lim.stats.KeptAlive.Load())
}

// With mTLS and per-name authorization, each add of a KeepAliveMany stream
// may keep alive only a name the client certificate allows: another is
// ended PERMISSION_DENIED, and the stream goes on.
func TestKeepAliveManyAuthorizesEachAdd(t *testing.T) {
	api, _ := mutualTLSAPI(t, servings[1])
	ctx := testenv.Ctx(t, 60*time.Second)
	a, err := api.Register(ctx, &pb.RegisterRequest{Name: "agent-1", TtlSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	m := openMany(t, ctx, api)
	m.send(&pb.KeepAliveManyRequest{Add: []*pb.KeepAliveRequest{
		{Name: "agent-2", Incarnation: a.Incarnation, LeaseId: a.LeaseId},
		{Name: "agent-1", Incarnation: a.Incarnation, LeaseId: a.LeaseId},
	}})
	if e := m.nextEnd(); e.Name != "agent-2" || apierr.ReasonOf(endErr(e)) != apierr.ReasonPermissionDenied {
		t.Fatalf("agent-1's certificate keeping agent-2 alive: %v", e)
	}
	m.renewedAll(map[string]bool{"agent-1": true})
}
