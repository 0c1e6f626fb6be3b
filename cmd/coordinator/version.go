package main

import (
	"github.com/spf13/cobra"

	"github.com/coordinator-dev/coordinator/pkg/buildinfo"
)

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the coordinator's version, commit and Go version",
		Long: `Show the version of this binary: the version a release build stamped
(go build -ldflags "-X github.com/coordinator-dev/coordinator/pkg/buildinfo.Version=v1.2.3",
as scripts/build-image.sh does), or else the module version Go recorded
("(devel)" when built from a checkout rather than with go install at a
version); the commit it was built from and whether the work tree had
changes; and the Go version and platform.`,
		Example: `  coordinator version
  coordinator version -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(g.output); err != nil {
				return err
			}
			return newPrinter(g.output, cmd.OutOrStdout()).print(readVersion())
		},
	}
}

// versionView is the output of version.
type versionView struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	CommitAt  string `json:"commit_time"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// readVersion reads the binary's version (package buildinfo).
func readVersion() versionView {
	b := buildinfo.Read()
	return versionView{Version: b.Version, Commit: b.Commit, CommitAt: b.CommitTime, Modified: b.Modified,
		GoVersion: b.GoVersion, Platform: b.Platform}
}

func (v versionView) header() []string {
	return []string{"VERSION", "COMMIT", "COMMIT TIME", "MODIFIED", "GO", "PLATFORM"}
}

func (v versionView) rows() [][]string {
	modified := "false"
	if v.Modified {
		modified = "true"
	}
	return [][]string{{cell(v.Version), orDash(v.Commit), orDash(v.CommitAt), modified, v.GoVersion, v.Platform}}
}
