package buildinfo_test

import (
	"runtime"
	"testing"

	"github.com/coordinator-dev/coordinator/pkg/buildinfo"
)

// A stamped version wins over Go's; unstamped, a test binary has Go's
// module version or "unknown", never an empty one.
func TestRead(t *testing.T) {
	if v := buildinfo.Read(); v.Version == "" || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Read() = %+v", v)
	}
	old := buildinfo.Version
	t.Cleanup(func() { buildinfo.Version = old })
	buildinfo.Version = "v1.2.3"
	if v := buildinfo.Read(); v.Version != "v1.2.3" {
		t.Errorf("Read().Version = %q with v1.2.3 stamped", v.Version)
	}
}
