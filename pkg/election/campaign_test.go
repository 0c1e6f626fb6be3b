package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
)

var (
	electionCampaign    = election.CampaignForTest
	electionWaitDeleted = election.WaitDeletedForTest
)

// electionWaitDeleted returns at once for a key that is gone, after the deletion
// for one that is there, and with ctx's error when ctx ends first.
func TestWaitDeleted(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	if err := electionWaitDeleted(ctx, cli, "never-written"); err != nil {
		t.Fatalf("absent key: %v", err)
	}

	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- electionWaitDeleted(ctx, cli, "k") }()
	// Writes to the key and around it do not end the wait.
	for i := range 20 {
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, "other", string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("returned %v while the key exists", err)
	default:
	}
	if _, err := cli.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after the deletion: %v", err)
	}

	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- electionWaitDeleted(cctx, cli, "k") }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v, want context.Canceled", err)
	}
}

// A candidate leads once every candidate before it is gone, on the keys
// concurrency.Election reads: etcd's own election sees the same leader.
func TestCampaignWaitsForEarlierCandidates(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	const pfx = "/election-test"
	session := func() *concurrency.Session {
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	first, err := electionCampaign(ctx, session(), pfx, "first")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		el  *concurrency.Election
		err error
	}
	second := make(chan result, 1)
	go func() {
		el, err := electionCampaign(ctx, session(), pfx, "second")
		second <- result{el, err}
	}()
	testenv.Eventually(t, 10*time.Second, func() bool {
		resp, err := cli.Get(ctx, pfx+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	}, "the second candidate's key never appeared")
	leader, err := concurrency.NewElection(session(), pfx).Leader(ctx)
	if err != nil || string(leader.Kvs[0].Value) != "first" {
		t.Fatalf("leader %v, %v; want first", leader, err)
	}
	select {
	case r := <-second:
		t.Fatalf("second won (%v) while first leads", r.err)
	default:
	}
	if err := first.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-second
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.el.Rev() <= first.Rev() || r.el.Key() == first.Key() {
		t.Fatalf("second leads key %s rev %d; first had %s rev %d", r.el.Key(), r.el.Rev(), first.Key(), first.Rev())
	}
	leader, err = concurrency.NewElection(session(), pfx).Leader(ctx)
	if err != nil || string(leader.Kvs[0].Value) != "second" {
		t.Fatalf("leader %v, %v; want second", leader, err)
	}
}

// BenchmarkHandover measures a graceful handover to a candidate that has
// just started campaigning, while a writer keeps etcd's revision moving:
// from the leader's resignation to the candidate's campaign returning, with
// etcd's concurrency.Election.Campaign (the baseline) and with campaign.
// Compare ms/handover of the two.
func BenchmarkHandover(b *testing.B) {
	_, cli := testenv.Etcd(b)
	ctx := testenv.Ctx(b, 10*time.Minute)
	wctx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for wctx.Err() == nil {
			_, _ = cli.Put(wctx, "/busy", "x")
		}
	}()
	defer func() {
		stopWriter()
		<-writerDone
	}()
	etcdCampaign := func(ctx context.Context, s *concurrency.Session, pfx, val string) (*concurrency.Election, error) {
		el := concurrency.NewElection(s, pfx)
		return el, el.Campaign(ctx, val)
	}
	for _, bc := range []struct {
		name     string
		campaign func(context.Context, *concurrency.Session, string, string) (*concurrency.Election, error)
	}{{"etcd-campaign", etcdCampaign}, {"campaign", electionCampaign}} {
		b.Run(bc.name, func(b *testing.B) {
			pfx := "/handover-" + bc.name
			newSession := func() *concurrency.Session {
				s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
				if err != nil {
					b.Fatal(err)
				}
				return s
			}
			sess := newSession()
			el, err := bc.campaign(ctx, sess, pfx, "leader")
			if err != nil {
				b.Fatal(err)
			}
			type result struct {
				el  *concurrency.Election
				err error
			}
			var total time.Duration
			for b.Loop() {
				next := newSession()
				won := make(chan result, 1)
				go func() {
					el, err := bc.campaign(ctx, next, pfx, "next")
					won <- result{el, err}
				}()
				for {
					resp, err := cli.Get(ctx, pfx+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
					if err != nil {
						b.Fatal(err)
					}
					if resp.Count == 2 {
						break
					}
				}
				t0 := time.Now()
				if err := el.Resign(ctx); err != nil {
					b.Fatal(err)
				}
				r := <-won
				total += time.Since(t0)
				if r.err != nil {
					b.Fatal(r.err)
				}
				sess.Close()
				sess, el = next, r.el
			}
			sess.Close()
			b.ReportMetric(float64(total)/float64(time.Millisecond)/float64(b.N), "ms/handover")
		})
	}
}
