package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks command-line misuse: exit status 2 and a usage line. It
// wraps the error it reports, so callers can test its cause.
type usageError struct {
	err error
	msg string // when set, shown in place of err's text
}

// Error returns msg when set, otherwise the wrapped error's text.
func (e *usageError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return e.err.Error()
}

// Unwrap returns the error the usage error reports.
func (e *usageError) Unwrap() error { return e.err }

// errUsage is matched by every *usageError with errors.Is.
var errUsage = errors.New("usage error")

// Is reports whether target is errUsage.
func (e *usageError) Is(target error) bool { return target == errUsage }

// usagef returns a usage error formatted as fmt.Errorf does (%w wraps).
func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// usageMsg returns a usage error that shows msg and wraps cause.
func usageMsg(msg string, cause error) error {
	return &usageError{err: cause, msg: msg}
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	endpoints   string
	namespace   string
	output      string
	dialTimeout time.Duration

	// etcd's TLS and user, spelled as etcdctl spells them.
	caCert, cert, key  string
	insecureSkipVerify bool
	user, password     string

	// etcdLogger receives the etcd client's log; nil means zap.NewNop().
	etcdLogger *zap.Logger
}

func (g *globalOptions) endpointList() []string { return splitList(g.endpoints) }

// validate checks the shared flags; errors are usage errors.
func (g *globalOptions) validate() error {
	if g.output != "table" && g.output != "json" {
		return usagef("-o/--write-out must be table or json, not %q", g.output)
	}
	if _, err := keyspace.New(g.namespace); err != nil {
		return usagef("--namespace: %w", err)
	}
	if len(g.endpointList()) == 0 {
		return usagef("--endpoints is empty")
	}
	return g.validateConn()
}

// connFlags names the flag of each etcdconn.Config field.
var connFlags = map[string]string{
	"Endpoints": "--endpoints", "DialTimeout": "--dial-timeout",
	"CACert": "--cacert", "Cert": "--cert", "Key": "--key",
	"Username": "--user", "Password": "--password",
}

// validateConn checks the etcd connection flags; errors are usage errors
// naming the flag, and never hold the password.
func (g *globalOptions) validateConn() error {
	if user, _, hasColon := strings.Cut(g.user, ":"); hasColon {
		if g.password != "" {
			return usagef("--user %q holds a password and --password is set: give one of them", user)
		}
		if user == "" {
			return usagef("--user has no name before its colon")
		}
	}
	switch {
	case g.cert != "" && g.key == "":
		return usagef("--cert needs --key")
	case g.key != "" && g.cert == "":
		return usagef("--key needs --cert")
	}
	if g.password != "" && g.user == "" {
		return usagef("--password needs --user")
	}
	sec := g.security()
	if sec.Username != "" && sec.Password == "" {
		return usagef("--user %q has no password: use --user name:password or --password", sec.Username)
	}
	err := g.conn().Validate()
	var fe *config.FieldError
	if errors.As(err, &fe) {
		flag := connFlags[fe.Field]
		if flag == "" {
			flag = fe.Field
		}
		return usageMsg(flag+": "+fe.Rule, err)
	}
	return err
}

// security returns the TLS and user settings of the flags.
func (g *globalOptions) security() etcdconn.Security {
	user, pw := etcdconn.ParseUser(g.user)
	if g.password != "" {
		pw = g.password
	}
	return etcdconn.Security{
		CACert: g.caCert, Cert: g.cert, Key: g.key, InsecureSkipTLSVerify: g.insecureSkipVerify,
		Username: user, Password: pw,
	}
}

// conn returns how this process reaches etcd.
func (g *globalOptions) conn() etcdconn.Config {
	return etcdconn.Config{
		Endpoints: g.endpointList(), DialTimeout: g.dialTimeout, Security: g.security(), Logger: g.etcdZapLogger(),
	}
}

// etcdZapLogger returns etcdLogger, or a logger that discards when unset.
func (g *globalOptions) etcdZapLogger() *zap.Logger {
	if g.etcdLogger == nil {
		return zap.NewNop()
	}
	return g.etcdLogger
}

// etcdClient dials the etcd endpoints with the TLS and user flags, and
// fails fast when etcd does not answer, refuses the user or the TLS
// handshake fails (see etcdconn.Dial). Bad flags are usage errors.
func (g *globalOptions) etcdClient(ctx context.Context) (*clientv3.Client, error) {
	if err := g.validateConn(); err != nil {
		return nil, err
	}
	return etcdconn.Dial(ctx, g.conn())
}

// newRootCommand builds the command tree. Streams are passed in so tests can
// run commands in-process.
func newRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "coordinator",
		Short: "Fenced, ordered writes to memcached for many callers, coordinated through etcd",
		Long: `coordinator lets processes on many machines write shared state to memcached
without stepping on each other. Callers register under a name; every accepted
operation gets a token (an etcd revision); the elected leader node applies
operations to memcached in token order, fenced against former leaders.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// cobra's distance for its own suggestions.
		SuggestionsMinimumDistance: 2,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.endpoints, "endpoints", "http://"+embedded.DefaultClientAddr,
		"etcd endpoints, comma separated (the default is the embedded node's address)")
	pf.StringVar(&g.namespace, "namespace", keyspace.DefaultNamespace,
		"namespace: every key of this deployment lives under it")
	pf.StringVarP(&g.output, "write-out", "o", "table", "output format: table or json")
	pf.DurationVar(&g.dialTimeout, "dial-timeout", 5*time.Second, "how long to wait for etcd to answer")
	pf.StringVar(&g.caCert, "cacert", "",
		"verify etcd's certificate with this CA bundle (PEM); https:// endpoints without it use the system roots")
	pf.StringVar(&g.cert, "cert", "", "client certificate for etcd (PEM), with --key")
	pf.StringVar(&g.key, "key", "", "private key of --cert (PEM)")
	pf.BoolVar(&g.insecureSkipVerify, "insecure-skip-tls-verify", false,
		"accept any etcd server certificate (tests only: anyone on the path can pose as etcd)")
	pf.StringVar(&g.user, "user", "", "etcd user, as name:password or name with --password")
	pf.StringVar(&g.password, "password", "", "password of --user")
	// Misuse is told apart by value: flag errors and argument errors are
	// *usageError, made by these hooks.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	root.Args = unknownCommand
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }

	root.AddCommand(
		newServeCommand(g),
		newSubmitCommand(g),
		newStatusCommand(g),
		newRegistrationsCommand(g),
		newOpsCommand(g),
		newBenchCommand(g),
		newVersionCommand(g),
		newTopologyCommand(g),
	)
	bindEnv(root, os.LookupEnv)
	usageArgs(root)
	return root
}

// run executes the CLI and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	if !errors.Is(err, errUsage) {
		return exitFailure
	}
	fmt.Fprintf(stderr, "Usage: %s\n", cmd.UseLine())
	fmt.Fprintf(stderr, "Run '%s --help' for more.\n", cmd.CommandPath())
	return exitUsage
}

// unknownCommand is the root's argument validator: the root runs only
// without arguments, and any argument that is not a command is misuse.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if sugg := cmd.SuggestionsFor(args[0]); len(sugg) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(sugg, "\n\t") + "\n"
	}
	return &usageError{err: errors.New(msg)}
}

// usageArgs makes the argument errors of every command in the tree of root
// usage errors, those of cobra's own commands (completion, help) included.
func usageArgs(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if validate := c.Args; validate != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				err := validate(cmd, args)
				if err != nil && !errors.Is(err, errUsage) {
					return &usageError{err: err}
				}
				return err
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
