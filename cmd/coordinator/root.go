package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
	passwordFile       string

	// filePassword is the password read from passwordFile by
	// validateConn.
	filePassword string

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

// passwordFlagsHint says where a password may come from, for the errors
// of a user without one.
const passwordFlagsHint = "--user name:password, --password-file or --password ($" + envPrefix + "PASSWORD)"

// validateConn checks the etcd connection flags and reads --password-file;
// errors are usage errors naming the flag, and never hold the password.
// A password given two ways is misuse: whichever won would surprise
// someone.
func (g *globalOptions) validateConn() error {
	if user, _, hasColon := strings.Cut(g.user, ":"); hasColon {
		if g.password != "" {
			return usagef("--user %q holds a password and --password is set: give one of them", user)
		}
		if g.passwordFile != "" {
			return usagef("--user %q holds a password and --password-file is set: give one of them", user)
		}
		if user == "" {
			return usagef("--user has no name before its colon")
		}
	}
	if g.password != "" && g.passwordFile != "" {
		return usagef("--password-file and --password ($%sPASSWORD) both give the password: give one of them", envPrefix)
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
	if g.passwordFile != "" && g.user == "" {
		return usagef("--password-file needs --user")
	}
	g.filePassword = ""
	if g.passwordFile != "" {
		pw, err := etcdconn.ReadPasswordFile(g.passwordFile)
		if err != nil {
			return usagef("--password-file: %w", err)
		}
		g.filePassword = pw
	}
	sec := g.security()
	if sec.Username != "" && sec.Password == "" {
		return usagef("--user %q has no password: use %s", sec.Username, passwordFlagsHint)
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
	switch {
	case g.password != "":
		pw = g.password
	case g.filePassword != "":
		pw = g.filePassword
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
	pf.StringVar(&g.user, "user", "", "etcd user, as name or name:password (a password here is visible to ps: prefer --password-file)")
	pf.StringVar(&g.password, "password", "",
		"password of --user; any user of the machine can read it in ps and /proc: prefer --password-file or the variable")
	pf.StringVar(&g.passwordFile, "password-file", "",
		"file holding the password of --user, one line (its line ending is ignored)")
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
		newVerifyCommand(g),
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

// redactedValue stands for a password in redactArgs's result.
const redactedValue = "REDACTED"

// redactArgs returns args with every password given on the command line
// replaced by redactedValue: the values of --password and the password of
// --user name:password. It is for the copies of the command line a process
// serves itself (net/http/pprof's /debug/pprof/cmdline prints os.Args);
// the kernel's copy in /proc/PID/cmdline keeps them, which is why the docs
// recommend --password-file. changed is false, and args returned as they
// are, when there is nothing to redact. Arguments after "--" are operands
// and left alone; a flag's value that looks like a password flag is
// redacted too, which shows less than the command line held, never more.
func redactArgs(args []string) (out []string, changed bool) {
	out = args
	set := func(i int, v string) {
		if !changed {
			out, changed = slices.Clone(args), true
		}
		out[i] = v
	}
	userValue := func(v string) (string, bool) {
		if name, _, ok := strings.Cut(v, ":"); ok {
			return name + ":" + redactedValue, true
		}
		return v, false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return out, changed
		case a == "--password" && i+1 < len(args):
			i++
			set(i, redactedValue)
		case strings.HasPrefix(a, "--password="):
			set(i, "--password="+redactedValue)
		case a == "--user" && i+1 < len(args):
			i++
			if v, ok := userValue(args[i]); ok {
				set(i, v)
			}
		case strings.HasPrefix(a, "--user="):
			if v, ok := userValue(strings.TrimPrefix(a, "--user=")); ok {
				set(i, "--user="+v)
			}
		}
	}
	return out, changed
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
