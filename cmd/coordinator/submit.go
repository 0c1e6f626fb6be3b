package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// closeTimeout bounds unregistering when the command ends, also after an
// interrupt.
const closeTimeout = 5 * time.Second

type submitOptions struct {
	as           string
	expire       expireFlag
	wait         bool
	waitTimeout  time.Duration
	ttl          time.Duration
	takeover     bool
	maxItemBytes int
}

func newSubmitCommand(g *globalOptions) *cobra.Command {
	o := &submitOptions{}
	cmd := &cobra.Command{
		Use:   "submit --as NAME (set KEY VALUE | delete KEY)",
		Short: "Submit one set or delete operation under a registration name",
		Long: `Submit one operation on a memcached key and print its token.

submit registers its own short incarnation of NAME (a lease of --ttl), submits
the operation in a transaction that checks that incarnation is current, and
unregisters as soon as the operation is accepted. An accepted operation is
applied by the leader in token order even after submit has exited.

If a live process holds NAME, submit refuses and names the holder; --takeover
supersedes it instead, so that process's later submissions are refused.

VALUE "-" reads the value from standard input, so large or binary values work.
--expire takes a Go duration ("90s", "5m") or whole seconds ("30"); zero, the
default, means no expiry. --wait blocks until the operation is applied to
memcached, so that a reader sees it.

Bad input (a key memcached would refuse, a value over the maximum item size,
a negative expiration, a bad name) is refused before anything is written, with
exit status 2. A name held by a live process, or a refused submission, exits 1.`,
		Example: `  # set a key and wait until memcached has it
  coordinator submit --as deployer set config/version v42 --wait

  # set a key that expires after 5 minutes, print the result as JSON
  coordinator submit --as deployer set session/abc token --expire 5m -o json

  # a large value from a file
  coordinator submit --as deployer set blob/model - < model.bin

  # delete a key, superseding whatever process holds the name
  coordinator submit --as deployer --takeover delete config/version`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSubmit(cmd, g, o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.as, "as", "", "registration name to submit under (required)")
	f.Var(&o.expire, "expire", `set only: the item's time to live, a duration ("90s") or whole seconds ("30"); 0 means none`)
	f.BoolVar(&o.wait, "wait", false, "wait until the operation is applied to memcached")
	f.DurationVar(&o.waitTimeout, "wait-timeout", 0,
		"with --wait, give up waiting after this long (0: wait until interrupted)")
	f.DurationVar(&o.ttl, "ttl", client.DefaultTTL, "lease TTL of the short registration (at least 1s)")
	f.BoolVar(&o.takeover, "takeover", false, "supersede a live process that holds NAME instead of refusing")
	f.IntVar(&o.maxItemBytes, "max-item-bytes", ops.DefaultMaxItemBytes,
		"memcached's item size limit (its -I); larger items are refused")
	return cmd
}

// submitView is the result of submit.
type submitView struct {
	Token       string `json:"token"`
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Applied     bool   `json:"applied"`
}

func (v submitView) header() []string { return []string{"TOKEN", "NAME", "INCARNATION", "APPLIED"} }

func (v submitView) rows() [][]string {
	return [][]string{{v.Token, cell(v.Name), v.Incarnation, strconv.FormatBool(v.Applied)}}
}

// validate checks every flag and argument and builds the operation, reading
// the value from stdin when it is "-". Nothing is sent anywhere before it
// returns.
func (o *submitOptions) validate(cmd *cobra.Command, args []string) (ops.Op, error) {
	if !cmd.Flags().Changed("as") {
		return ops.Op{}, usagef("--as NAME is required")
	}
	if err := keyspace.ValidateName(o.as); err != nil {
		return ops.Op{}, usageMsg("--as: "+oneLine(err), err)
	}
	if o.ttl < time.Second {
		return ops.Op{}, usagef("--ttl must be at least 1s (got %s)", o.ttl)
	}
	if o.waitTimeout < 0 {
		return ops.Op{}, usagef("--wait-timeout must not be negative (got %s)", o.waitTimeout)
	}
	if o.maxItemBytes < 1024 {
		return ops.Op{}, usagef("--max-item-bytes must be at least 1024")
	}
	if len(args) == 0 {
		return ops.Op{}, usagef("missing operation: set KEY VALUE or delete KEY")
	}
	kind, err := ops.ParseKind(args[0])
	if err != nil {
		return ops.Op{}, usagef("%w", err)
	}
	var op ops.Op
	switch kind {
	case ops.KindSet:
		if len(args) != 3 {
			return ops.Op{}, usagef("set takes KEY and VALUE (got %d arguments after set)", len(args)-1)
		}
		value := []byte(args[2])
		if args[2] == "-" {
			if value, err = o.readValue(cmd.InOrStdin(), args[1]); err != nil {
				return ops.Op{}, err
			}
		}
		op = ops.Set(args[1], value, o.expire.d)
	case ops.KindDelete:
		if len(args) != 2 {
			return ops.Op{}, usagef("delete takes KEY (got %d arguments after delete)", len(args)-1)
		}
		if cmd.Flags().Changed("expire") {
			return ops.Op{}, usagef("--expire applies to set only")
		}
		op = ops.Delete(args[1])
	}
	if err := op.Validate(o.limits()); err != nil {
		return ops.Op{}, &usageError{err: err}
	}
	return op, nil
}

func (o *submitOptions) limits() ops.Limits { return ops.Limits{MaxItemBytes: o.maxItemBytes} }

// readValue reads a value from r. It reads at most one byte more than the
// item limit, so an endless or huge input is refused without being held in
// memory.
func (o *submitOptions) readValue(r io.Reader, key string) ([]byte, error) {
	limit := o.maxItemBytes
	value, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read the value from standard input: %w", err)
	}
	if len(value) > limit {
		return nil, &usageError{err: &badInput{specific: ops.ErrValueTooLarge,
			detail: fmt.Sprintf("more than %d bytes on standard input for key %q, item limit %d bytes", limit, key, limit)}}
	}
	return value, nil
}

func runSubmit(cmd *cobra.Command, g *globalOptions, o *submitOptions, args []string) (err error) {
	if err := g.validate(); err != nil {
		return err
	}
	op, err := o.validate(cmd, args)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	cli, err := g.etcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	c, err := client.New(client.Config{Etcd: cli, Namespace: g.namespace, Limits: o.limits()})
	if err != nil {
		return err
	}
	defer c.Close()

	caller, err := c.Register(ctx, o.as, client.RegisterConfig{TTL: o.ttl, IfAbsent: !o.takeover})
	if errors.Is(err, client.ErrNameHeld) {
		return fmt.Errorf("%w; pass --takeover to supersede it", err)
	}
	if err != nil {
		return fmt.Errorf("register %q: %w", o.as, err)
	}
	closed := false
	unregister := func() {
		if closed {
			return
		}
		closed = true
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		if cerr := caller.Close(cctx); cerr != nil {
			// The lease expires on its own within --ttl.
			fmt.Fprintf(cmd.ErrOrStderr(), "Warning: unregister %q: %v\n", o.as, cerr)
		}
	}
	defer unregister()

	tok, err := caller.Submit(ctx, op)
	switch {
	case errors.Is(err, client.ErrInvalid) || errors.Is(err, client.ErrInvalidName):
		return &usageError{err: err}
	case errors.Is(err, client.ErrSuperseded) || errors.Is(err, client.ErrExpired):
		return fmt.Errorf("submission refused, nothing was written: %w", err)
	case err != nil:
		return fmt.Errorf("submit: %w (the operation may or may not have been accepted)", err)
	}
	unregister()

	v := submitView{Token: tok.String(), Name: o.as, Incarnation: formatRev(caller.Incarnation())}
	p := newPrinter(g.output, cmd.OutOrStdout())
	if o.wait {
		wctx := ctx
		if o.waitTimeout > 0 {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
			defer cancel()
		}
		if werr := waitWithProgress(wctx, c, cli, g.namespace, tok, cmd.ErrOrStderr()); werr != nil {
			if perr := p.print(v); perr != nil {
				return perr
			}
			return fmt.Errorf("token %s was accepted and will be applied, but waiting for it ended: %w", tok, werr)
		}
		v.Applied = true
	}
	return p.print(v)
}

// badInput is bad input found by the command itself. Like the errors of
// ops.Op.Validate, it wraps client.ErrInvalid and a specific error.
type badInput struct {
	specific error
	detail   string
}

// Error names the problem.
func (e *badInput) Error() string { return e.specific.Error() + ": " + e.detail }

// Unwrap returns the specific error and client.ErrInvalid.
func (e *badInput) Unwrap() []error { return []error{e.specific, client.ErrInvalid} }

// expireFlag is the --expire flag: a Go duration or whole seconds.
// Negative values are accepted here and refused by validation, which names
// the problem.
type expireFlag struct{ d time.Duration }

// String returns the duration.
func (e *expireFlag) String() string {
	if e.d == 0 {
		return "0"
	}
	return e.d.String()
}

// Type names the flag's type in help.
func (e *expireFlag) Type() string { return "duration" }

// Set parses "30" as 30 seconds and "30s", "5m" as Go durations.
func (e *expireFlag) Set(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > math.MaxInt64/int64(time.Second) || n < math.MinInt64/int64(time.Second) {
			return fmt.Errorf("%d seconds is out of range", n)
		}
		e.d = time.Duration(n) * time.Second
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 90s or 5m, or whole seconds")
	}
	e.d = d
	return nil
}

// oneLine joins the lines of a multi-line error message.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", ": ") }
