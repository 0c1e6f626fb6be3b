package main

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/inspect"
)

func newStatusCommand(g *globalOptions) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the leader, term, applied watermark and pending work of a namespace",
		Long: `Show a summary of the namespace: the leader node (empty when none is
elected), the leadership term, the applied watermark (the highest token such
that it and every token before it are in memcached), the pending operations
and batches (with more than 1000 batches pending, the operations of 1000
are counted and one for each other batch: a lower bound, shown ending in
"+", and -o json sets pending_ops_lower_bound),
the number of live registrations, the number of records the
leader set aside as undecodable or unappliable (quarantined), and the
memcached restarts the leaders found (a restarted server lost its items):
how many, and the latest one as server@time (-o json adds its old and new
pid and the term of the leader that found it).`,
		Example: `  coordinator status
  coordinator status --endpoints http://etcd-1:2379 --namespace prod -o json
  coordinator status --watch`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, done, err := openInspector(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer done()
			if watch {
				return watchStatus(cmd, in, g.output)
			}
			st, err := in.Status(cmd.Context())
			if err != nil {
				return err
			}
			warnTermHeadroom(cmd.ErrOrStderr(), st.Term)
			return newPrinter(g.output, cmd.OutOrStdout()).print(newStatusView(st))
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false,
		"after the first summary, print a new one each time it changes, until interrupted "+
			"(a table gains a row per change; JSON output is one document per change)")
	return cmd
}

// watchStatus prints the status and a new row (or JSON document) each time
// it changes, until the command's context ends (Ctrl-C), which is success.
func watchStatus(cmd *cobra.Command, in *inspect.Inspector, format string) error {
	ctx := cmd.Context()
	var p printer = newPrinter(format, cmd.OutOrStdout())
	if format == "table" {
		p = &rowPrinter{w: cmd.OutOrStdout(), ctx: ctx}
	}
	err := in.WatchStatus(ctx, func(st inspect.Status) error { return p.print(newStatusView(st)) })
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// statusView is the output of status.
type statusView struct {
	Namespace  string `json:"namespace"`
	Leader     string `json:"leader"`
	Term       uint64 `json:"term"`
	Applied    string `json:"applied"`
	PendingOps int    `json:"pending_ops"`
	// PendingOpsLowerBound reports that PendingOps is a lower bound (see
	// inspect.CountPending).
	PendingOpsLowerBound bool  `json:"pending_ops_lower_bound"`
	PendingBatches       int   `json:"pending_batches"`
	Registrations        int   `json:"registrations"`
	Quarantined          int64 `json:"quarantined"`
	// MemcachedRestarts and LastRestart are the memcached restarts the
	// leaders recorded, and the latest of them (absent when none is).
	MemcachedRestarts int64        `json:"memcached_restarts"`
	LastRestart       *restartView `json:"last_restart,omitempty"`
}

// restartView is one memcached restart in status's output.
type restartView struct {
	Server string `json:"server"`
	OldPid int    `json:"old_pid"`
	NewPid int    `json:"new_pid"`
	Time   string `json:"time"`
	Term   uint64 `json:"term"`
}

func newStatusView(st inspect.Status) statusView {
	v := statusView{
		Namespace: st.Namespace, Leader: st.Leader, Term: st.Term, Applied: st.Applied.String(),
		PendingOps: st.PendingOps, PendingOpsLowerBound: st.PendingOpsLowerBound, PendingBatches: st.PendingBatches,
		Registrations: st.Registrations, Quarantined: st.Quarantined,
		MemcachedRestarts: st.MemcachedRestarts,
	}
	if r := st.LastRestart; r.Server != "" {
		v.LastRestart = &restartView{
			Server: r.Server, OldPid: r.OldPid, NewPid: r.NewPid, Time: r.Time.UTC().Format(time.RFC3339), Term: r.Term,
		}
	}
	return v
}

func (v statusView) header() []string {
	return []string{"NAMESPACE", "LEADER", "TERM", "APPLIED", "PENDING OPS", "PENDING BATCHES", "REGISTRATIONS", "QUARANTINED", "RESTARTS", "LAST RESTART"}
}

func (v statusView) rows() [][]string {
	return [][]string{{
		cell(v.Namespace), orDash(v.Leader), strconv.FormatUint(v.Term, 10), v.Applied,
		v.pendingOpsCell(), strconv.Itoa(v.PendingBatches),
		strconv.Itoa(v.Registrations), strconv.FormatInt(v.Quarantined, 10),
		strconv.FormatInt(v.MemcachedRestarts, 10), v.LastRestart.cell(),
	}}
}

// pendingOpsCell is the pending operations, with a "+" when they are more.
func (v statusView) pendingOpsCell() string {
	s := strconv.Itoa(v.PendingOps)
	if v.PendingOpsLowerBound {
		s += "+"
	}
	return s
}

// cell is the restart in one table cell: "server@time", or "-".
func (r *restartView) cell() string {
	if r == nil {
		return "-"
	}
	return r.Server + "@" + r.Time
}

// noArgs is cobra.NoArgs returning a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments (got %q)", cmd.CommandPath(), args)
	}
	return nil
}
