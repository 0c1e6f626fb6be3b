package workload

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// worker is the caller of one name: one incarnation at a time, restarted
// from time to time.
type worker struct {
	w       *Workload
	name    string
	cli     registrar
	rng     *rand.Rand
	forced  chan struct{}
	inc     int            // local incarnation counter, part of every id
	seq     atomic.Int64   // submission counter, shared with old incarnations
	old     sync.WaitGroup // goroutines of old incarnations and waits
	waits   atomic.Int64   // waits in flight
	waitSeq atomic.Int64
}

// maxWaits bounds the WaitApplied calls a caller has in flight.
const maxWaits = 4

func seq(n int64) string { return strconv.FormatInt(n, 10) }

type incarnation struct {
	caller session
	n      int
}

func (k *worker) run() {
	defer k.w.wg.Done()
	cur := k.register(false)
	for !k.w.stopped() {
		if cur == nil {
			if !k.w.sleep(100 * time.Millisecond) {
				break
			}
			cur = k.register(false)
			continue
		}
		pause := time.Duration(float64(k.w.cfg.Pause) * (0.5 + k.rng.Float64()))
		if !k.w.sleep(k.w.onBeat(pause)) || !k.w.holdOff() {
			break
		}
		restart := false
		select {
		case <-k.forced:
			restart = true
		default:
			restart = k.w.cfg.RestartEvery > 0 && k.rng.Intn(k.w.cfg.RestartEvery) == 0
		}
		if restart {
			// A restart: the new process registers while the old one
			// still has a submission or two in flight, made right after
			// the new one's first few (see overlap).
			old := cur
			cur = k.register(k.rng.Intn(2) == 0)
			made := k.overlap(cur, rand.New(rand.NewSource(k.rng.Int63())))
			k.old.Add(1)
			go k.zombie(old, 1+k.rng.Intn(2), rand.New(rand.NewSource(k.rng.Int63())), made)
			continue
		}
		if k.w.cfg.Burst > 0 && k.rng.Intn(k.w.cfg.BurstEvery) == 0 {
			k.burst(cur)
			continue
		}
		res, tok, opsDone := k.submit(cur, k.rng)
		switch res {
		case checker.Refused:
			// Lease lost or superseded: restart under the same name.
			k.closeLater(cur)
			cur = k.register(k.rng.Intn(2) == 0)
		case checker.OK:
			if k.rng.Intn(5) == 0 && k.waits.Load() < maxWaits {
				// The caller goes on submitting while it waits, as a
				// process with several threads would.
				k.waits.Add(1)
				k.old.Add(1)
				go k.waitAndRead(cur, tok, opsDone, seq(k.waitSeq.Add(1)))
			}
		}
	}
	k.old.Wait()
	if cur != nil {
		k.close(cur)
	}
}

// register registers the name again, retrying until it works or the
// workload stops.
func (k *worker) register(drain bool) *incarnation {
	for !k.w.stopped() {
		timeout := 10 * time.Second
		if drain {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(k.w.stopCtx, timeout)
		start := k.w.rec.Now()
		c, err := k.cli.Register(ctx, k.name, client.RegisterConfig{TTL: k.w.cfg.CallerTTL, WaitDrained: drain})
		end := k.w.rec.Now()
		cancel()
		if err == nil {
			k.inc++
			k.w.rec.Registered(checker.Registration{Name: k.name, Incarnation: c.Incarnation(), Start: start, End: end, WaitDrained: drain})
			return &incarnation{caller: c, n: k.inc}
		}
		drain = false
		if !k.w.sleep(100 * time.Millisecond) {
			break
		}
	}
	return nil
}

// overlapSubmissions is how many batches a restarted caller's new
// incarnation submits at once, before its old incarnation's last ones: with
// two transactions in flight per client, the third waits in the queue, and
// the old incarnation's submission made right after it lands in the same
// queue behind it.
const overlapSubmissions = 3

// overlap submits overlapSubmissions batches at once under a new
// incarnation, on goroutines of their own, and returns a channel closed
// once every one of them has been made (it waits for its answer). An old
// incarnation's submission made after that is queued behind them: a group
// transaction that carried both would store it under the new
// incarnation's compare (G1; the checker's RuleFence).
func (k *worker) overlap(inc *incarnation, rng *rand.Rand) <-chan struct{} {
	made := make(chan struct{})
	if inc == nil {
		close(made)
		return made
	}
	var sent sync.WaitGroup
	sent.Add(overlapSubmissions)
	for range overlapSubmissions {
		id, batch, rec := k.randomBatch(inc, rng)
		k.old.Add(1)
		go func() {
			defer k.old.Done()
			k.send(inc, id, batch, rec, sent.Done)
		}()
	}
	go func() {
		sent.Wait()
		close(made)
	}()
	return made
}

// zombie submits n more batches under an old incarnation, once made is
// closed, then closes it.
func (k *worker) zombie(old *incarnation, n int, rng *rand.Rand, made <-chan struct{}) {
	defer k.old.Done()
	<-made
	if old == nil {
		return
	}
	for range n {
		k.submit(old, rng)
	}
	k.close(old)
}

// BurstKeys are the keys bursts write (Config.Burst), one per batch of a
// burst: every key of a burst is written by one batch, so that a round of
// the leader writes as many keys as it holds batches of a burst, one step
// after another.
func BurstKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("b%03d", i)
	}
	return keys
}

// burst submits Config.Burst batches at once, one set of a burst key each.
// They share a few transactions of up to 64 batches, and arrive at the
// leader faster than it writes them, so that its rounds (at most 127
// batches) end inside one of those transactions: the watermark then
// stops at an index short of the transaction's last batch. For each
// transaction, the caller waits for its last batch of the burst and reads
// the watermark and the key back (waitAndRead; G8).
func (k *worker) burst(inc *incarnation) {
	keys := BurstKeys(k.w.cfg.Burst)
	type sent struct {
		res checker.Result
		tok tokenseq.Token
		rec []checker.Op
	}
	out := make([]sent, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		id := fmt.Sprintf("%s.%d.%d", k.name, inc.n, k.seq.Add(1))
		v := id + ".0"
		batch := []ops.Op{ops.Set(key, []byte(v), 0)}
		rec := []checker.Op{{Kind: checker.KindSet, Key: key, Value: v}}
		wg.Go(func() {
			res, tok := k.send(inc, id, batch, rec, nil)
			out[i] = sent{res, tok, rec}
		})
	}
	wg.Wait()
	last := map[int64]int{} // revision -> the burst's batch of the highest index in it
	for i, o := range out {
		if o.res != checker.OK {
			continue
		}
		if j, ok := last[o.tok.Revision]; !ok || out[j].tok.Less(o.tok) {
			last[o.tok.Revision] = i
		}
	}
	for _, i := range last {
		k.waits.Add(1)
		k.old.Add(1)
		go k.waitAndRead(inc, out[i].tok, out[i].rec, seq(k.waitSeq.Add(1)))
	}
}

func (k *worker) closeLater(inc *incarnation) {
	k.old.Add(1)
	go func() {
		defer k.old.Done()
		k.close(inc)
	}()
}

func (k *worker) close(inc *incarnation) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = inc.caller.Close(ctx)
}

// submit sends one batch of one to three operations and records it.
func (k *worker) submit(inc *incarnation, rng *rand.Rand) (checker.Result, tokenseq.Token, []checker.Op) {
	id, batch, rec := k.randomBatch(inc, rng)
	res, tok := k.send(inc, id, batch, rec, nil)
	return res, tok, rec
}

// randomBatch draws a batch of one to three operations on the key space,
// under a new id of inc.
func (k *worker) randomBatch(inc *incarnation, rng *rand.Rand) (string, []ops.Op, []checker.Op) {
	seq := k.seq.Add(1)
	id := fmt.Sprintf("%s.%d.%d", k.name, inc.n, seq)
	n := 1
	switch r := rng.Intn(20); {
	case r == 0:
		n = 3
	case r < 4:
		n = 2
	}
	var batch []ops.Op
	var rec []checker.Op
	for i := range n {
		key := k.w.cfg.Keys[rng.Intn(len(k.w.cfg.Keys))]
		if rng.Intn(4) == 0 {
			batch = append(batch, ops.Delete(key))
			rec = append(rec, checker.Op{Kind: checker.KindDelete, Key: key})
			continue
		}
		v := id + "." + strconv.Itoa(i)
		batch = append(batch, ops.Set(key, []byte(v), 0))
		rec = append(rec, checker.Op{Kind: checker.KindSet, Key: key, Value: v})
	}
	return id, batch, rec
}

// send submits batch (recorded as rec) under id and records the call;
// made, when not nil, is called right before the submission is made.
func (k *worker) send(inc *incarnation, id string, batch []ops.Op, rec []checker.Op, made func()) (checker.Result, tokenseq.Token) {
	ctx, cancel := context.WithTimeout(context.Background(), k.w.cfg.CallTimeout)
	start := k.w.rec.Now()
	if made != nil {
		made()
	}
	tok, err := inc.caller.SubmitWithID(ctx, id, batch...)
	end := k.w.rec.Now()
	cancel()
	c := checker.Call{ID: id, Name: k.name, Incarnation: inc.caller.Incarnation(), Ops: rec, Start: start, End: end}
	switch {
	case err == nil:
		c.Result, c.Token = checker.OK, checkerToken(tok)
		k.w.acknowledged(tok)
		k.w.okFor[k.name].Add(1)
	case refused(err):
		c.Result, c.Err = checker.Refused, err.Error()
		k.w.refused.Add(1)
	default:
		c.Result, c.Err = checker.Unknown, err.Error()
		k.w.unknown.Add(1)
	}
	k.w.rec.Call(c)
	return c.Result, tok
}

// checkerToken is tok as the history records it.
func checkerToken(tok tokenseq.Token) checker.Token {
	return checker.Token{Revision: tok.Revision, Index: tok.Index}
}

// waitAndRead waits until tok is applied (G8), then reads the batch's keys
// back as reader "rw-<name>-<n>" with its own memcached client.
func (k *worker) waitAndRead(inc *incarnation, tok tokenseq.Token, batch []checker.Op, n string) {
	defer k.old.Done()
	defer k.waits.Add(-1)
	ctx, cancel := context.WithTimeout(k.w.stopCtx, 20*time.Second)
	defer cancel()
	start := k.w.rec.Now()
	err := inc.caller.WaitApplied(ctx, tok)
	end := k.w.rec.Now()
	if err != nil {
		return
	}
	// First the watermark: a wait released early shows in it only until
	// the leader's next commit.
	wm := k.w.readWatermark(ctx)
	k.w.rec.Applied(checker.Applied{Token: checkerToken(tok), Start: start, End: end, Watermark: checkerToken(wm)})
	mc := k.w.memcachedClient(time.Second)
	defer mc.Close()
	for _, o := range batch {
		if readKey(k.w.rec, mc, "rw-"+k.name+"-"+n, o.Key) {
			k.w.reads.Add(1)
		}
	}
}
