// Command crashcaller is a caller in its own OS process, for the fault
// suite's caller-crash scenario: it registers a name through pkg/client (or,
// with -api, through a node's API with pkg/apiclient, holding a keep-alive
// stream) and
// submits small batches of sets and deletes until it is killed, printing
// on stdout, as JSON lines (workload.CallerLine), its registration, every
// submission just before it is made, and every outcome. A test kills it
// with SIGKILL and feeds what it printed into the history; a submission
// whose outcome it never printed is an unknown outcome.
//
//	crashcaller -endpoints http://127.0.0.1:2379 -namespace faults \
//	    -name cx -keys k0,k1,k2 -ttl 2s
//	crashcaller -api 127.0.0.1:8080 -name cx -keys k0,k1,k2 -ttl 6s
//
// Values name their operation (name.incarnation.seq.index), as the
// workload's do.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/integration/checker"
	"github.com/coordinator-dev/coordinator/integration/faults/workload"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("crashcaller", flag.ContinueOnError)
	endpoints := fs.String("endpoints", "", "etcd endpoints, comma separated (required without -api)")
	namespace := fs.String("namespace", "", "coordinator namespace (required without -api)")
	name := fs.String("name", "", "registration name (required)")
	keys := fs.String("keys", "", "keys, comma separated (required)")
	ttl := fs.Duration("ttl", 2*time.Second, "lease TTL")
	pause := fs.Duration("pause", 50*time.Millisecond, "pause between submissions")
	seed := fs.Int64("seed", 1, "seed of the batches")
	api := fs.String("api", "", "a node's API address: register and submit through it rather than etcd")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if (*api == "" && (*endpoints == "" || *namespace == "")) || *name == "" || *keys == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: crashcaller {-endpoints URLS -namespace NS | -api ADDR} -name NAME -keys K1,K2,...")
		return 2
	}
	ks := strings.Split(*keys, ",")
	out := json.NewEncoder(os.Stdout)
	start := time.Now().UnixNano()
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, err := register(rctx, *api, *endpoints, *namespace, *name, *ttl)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "crashcaller: register: %v\n", err)
		return 1
	}
	inc := c.Incarnation()
	_ = out.Encode(workload.CallerLine{Event: "registered", Name: *name, Incarnation: inc, Start: start, End: time.Now().UnixNano()})
	rng := rand.New(rand.NewSource(*seed))
	for seq := 1; ; seq++ {
		id := *name + ".1." + strconv.Itoa(seq)
		var batch []ops.Op
		var rec []checker.Op
		for i := range 1 + rng.Intn(2) {
			key := ks[rng.Intn(len(ks))]
			if rng.Intn(4) == 0 {
				batch = append(batch, ops.Delete(key))
				rec = append(rec, checker.Op{Kind: checker.KindDelete, Key: key})
				continue
			}
			v := id + "." + strconv.Itoa(i)
			batch = append(batch, ops.Set(key, []byte(v), 0))
			rec = append(rec, checker.Op{Kind: checker.KindSet, Key: key, Value: v})
		}
		_ = out.Encode(workload.CallerLine{Event: "call", Name: *name, Incarnation: inc, ID: id, Ops: rec, Start: time.Now().UnixNano()})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tok, err := c.SubmitWithID(ctx, id, batch...)
		cancel()
		l := workload.CallerLine{Event: "result", ID: id, End: time.Now().UnixNano()}
		switch {
		case err == nil:
			l.Result, l.Token = checker.OK, checker.Token{Revision: tok.Revision, Index: tok.Index}
		case errors.Is(err, client.ErrSuperseded) || errors.Is(err, client.ErrExpired) || refused(err):
			l.Result, l.Err = checker.Refused, err.Error()
		default:
			l.Result, l.Err = checker.Unknown, err.Error()
		}
		_ = out.Encode(l)
		if l.Result == checker.Refused {
			return 1
		}
		time.Sleep(*pause)
	}
}

// caller is the incarnation crashcaller submits under.
type caller interface {
	Incarnation() int64
	SubmitWithID(ctx context.Context, id string, batch ...ops.Op) (tokenseq.Token, error)
}

// register registers name through the API at api, or else through etcd.
// The process exits without closing what it opened: it is killed.
func register(ctx context.Context, api, endpoints, namespace, name string, ttl time.Duration) (caller, error) {
	if api != "" {
		cli, err := apiclient.New(apiclient.Config{Addr: api})
		if err != nil {
			return nil, err
		}
		return workload.RegisterThroughAPI(ctx, cli, name, client.RegisterConfig{TTL: ttl})
	}
	cli, err := client.New(client.Config{Endpoints: strings.Split(endpoints, ","), Namespace: namespace})
	if err != nil {
		return nil, err
	}
	return cli.Register(ctx, name, client.RegisterConfig{TTL: ttl})
}

// refused reports whether err is the API's refusal of the incarnation.
func refused(err error) bool {
	switch apierr.ReasonOf(err) {
	case apierr.ReasonSuperseded, apierr.ReasonExpired:
		return true
	}
	return false
}
