package main

import (
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the coordinator's version, commit and Go version",
		Long: `Show the version of this binary, read from the build information Go records:
the module version ("(devel)" when built from a checkout rather than with
go install at a version), the commit it was built from and whether the work
tree had changes, and the Go version and platform.`,
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

// readVersion reads the build information the Go toolchain embeds.
func readVersion() versionView {
	v := versionView{Version: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if info.Main.Version != "" {
		v.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitAt = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
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
