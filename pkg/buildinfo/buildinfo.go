// Package buildinfo reports the version of the running coordinator binary:
// the one a release build stamps with -ldflags, or else what the Go
// toolchain recorded (the module version of `go install ...@v1.2.3`,
// "(devel)" for a build from a checkout), with the commit and Go version.
//
// A release build stamps it with
//
//	go build -ldflags "-X github.com/coordinator-dev/coordinator/pkg/buildinfo.Version=v1.2.3" ./cmd/coordinator
//
// as scripts/build-image.sh does.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version stamped at build time with -ldflags -X;
// empty in a build that was not stamped.
var Version string

// Info describes the running binary.
type Info struct {
	// Version is Version when stamped, else the main module's version as
	// Go recorded it ("(devel)" from a checkout), else "unknown".
	Version string
	// Commit is the VCS revision Go recorded; empty without one (a build
	// with -buildvcs=false, or outside a checkout).
	Commit string
	// CommitTime is the revision's time, RFC 3339; empty without one.
	CommitTime string
	// Modified reports a work tree with changes at build time.
	Modified bool
	// GoVersion is the Go release that built the binary.
	GoVersion string
	// Platform is GOOS/GOARCH.
	Platform string
}

// Read returns the running binary's Info.
func Read() Info {
	v := Info{Version: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if ok && info.Main.Version != "" {
		v.Version = info.Main.Version
	}
	if Version != "" {
		v.Version = Version
	}
	if !ok {
		return v
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}
