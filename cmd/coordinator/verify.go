package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/verify"
)

func newVerifyCommand(g *globalOptions) *cobra.Command {
	var (
		from     string
		keysFile string
		rate     float64
		max      int
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Compare memcached with what the leader applied, key by key",
		Long: `verify reads each key from every memcached server of the applied topology and
reports it as ok, missing (expired, evicted, or lost: its server evicted
nothing, so a restart, a flush or a delete outside the coordinator), stale
(an older term or another value than the last applied write, or present
after its delete), misplaced (only on a server the topology does not name
for it, where readers do not look), and any stray copy on another server.

The keys, and what each should hold, come from restore's record (--from
record, the default: nodes run with --restore-on-restart), from the batches
etcd's history still holds (--from history: applied ones until etcd compacts
them; no term is compared, and a missing key set with a lifetime counts as
expired), or from a file of keys, one a line (--keys; each is checked
against its record when it has one, for its place otherwise).

Reads are paced by --rate (keys a second, each read from every server; 0
reads as fast as the servers answer). A run longer than a second writes its
progress to stderr. Exit status: 0 when every key is ok or expired and none
has a stray copy, 1 otherwise, 2 for misuse.`,
		Example: `  coordinator verify --namespace prod
  coordinator verify --from history -o json
  coordinator verify --keys keys.txt --rate 500`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := verify.Config{Layout: keyspace.MustNew(g.namespace), Source: verify.Source(from), Rate: rate, Unpaced: rate == 0, MaxProblems: max}
			switch {
			case rate < 0:
				return usagef("--rate %g is negative", rate)
			case max < 0:
				return usagef("--max-problems %d is negative", max)
			case keysFile != "" && cmd.Flags().Changed("from"):
				return usagef("--keys and --from both name where the keys come from: give one of them")
			case keysFile != "":
				keys, err := readKeys(cmd.InOrStdin(), keysFile)
				if err != nil {
					return usagef("--keys: %w", err)
				}
				if len(keys) == 0 {
					return usagef("--keys: %w: %s holds no key", verify.ErrNoKeys, keysFile)
				}
				cfg.Source, cfg.Keys = verify.SourceKeys, keys
			case from != string(verify.SourceRecord) && from != string(verify.SourceHistory):
				return usagef("--from must be record or history, not %q", from)
			}
			stderr := cmd.ErrOrStderr()
			cfg.Progress = func(p verify.Progress) {
				fmt.Fprintf(stderr, "verify: %d of %d keys checked (%.0f%%), %d to look at, %s\n",
					p.Checked, p.Total, 100*float64(p.Checked)/float64(p.Total), p.Problems, p.Elapsed.Round(1e9))
			}
			cli, err := g.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			cfg.Etcd = cli
			if err := cfg.Validate(); err != nil {
				return usageMsg("--keys: "+err.Error(), err)
			}
			rep, err := verify.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := newPrinter(g.output, cmd.OutOrStdout()).print(verifyView{rep}); err != nil {
				return err
			}
			return rep.Err()
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", string(verify.SourceRecord), "where the keys come from: record (restore's) or history (etcd's)")
	f.StringVar(&keysFile, "keys", "", `file of keys to check, one a line ("-" for stdin; blank lines and lines starting with # are skipped)`)
	f.Float64Var(&rate, "rate", verify.DefaultRate, "keys checked a second, each read from every server; 0 for as fast as the servers answer")
	f.IntVar(&max, "max-problems", verify.DefaultMaxProblems, "keys listed at most (the counts cover every key)")
	return cmd
}

// readKeys reads a file of keys, one a line; "-" is stdin. Lines are
// trimmed; blank ones and those starting with # are skipped.
func readKeys(stdin io.Reader, name string) ([]string, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var keys []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k := strings.TrimSpace(sc.Text())
		if k == "" || strings.HasPrefix(k, "#") {
			continue
		}
		keys = append(keys, k)
	}
	return keys, sc.Err()
}

// verifyView is the output of verify: in JSON the whole report, in a table
// one row per key to look at, then a summary row.
type verifyView struct{ *verify.Report }

func (v verifyView) header() []string {
	return []string{"KEY", "STATUS", "CAUSE", "SERVER", "STRAYS", "TERM", "WANT TERM", "DETAIL"}
}

func (v verifyView) rows() [][]string {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	term := func(t uint32) string {
		if t == 0 {
			return "-"
		}
		return strconv.FormatUint(uint64(t), 10)
	}
	var rows [][]string
	for _, p := range v.Problems {
		rows = append(rows, []string{p.Key, string(p.Status), dash(string(p.Cause)), p.Server, dash(strings.Join(p.Strays, ",")), term(p.Term), term(p.WantTerm), dash(p.Detail)})
	}
	more := ""
	if v.Truncated {
		more = " (list cut; -o json or --max-problems for more)"
	}
	summary := fmt.Sprintf("%d keys from %s at %.0f/s against %s: %d ok, %d missing (%d expired), %d stale, %d misplaced, %d with strays%s",
		v.Keys, v.Source, v.KeysPerSecond, v.Topology, v.OK, v.Missing, v.Expired, v.Stale, v.Misplaced, v.Strays, more)
	return append(rows, []string{"TOTAL", summary, "", "", "", "", "", ""})
}
