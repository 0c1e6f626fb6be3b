package coordinatorv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
)

// The committed OpenAPI document is the one scripts/gen-api.sh generates
// from coordinator.proto and coordinator_api.yaml, and the one embedded.
// It needs protoc, which scripts/install-deps.sh installs
// (protobuf-compiler), and the Go module proxy or cache for the pinned
// plugins.
func TestOpenAPIIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not found: run scripts/install-deps.sh (Debian's protobuf-compiler)")
	}
	committed, err := os.ReadFile("coordinator.swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, pb.OpenAPI) {
		t.Error("the embedded OpenAPI document is not coordinator.swagger.json")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "scripts/gen-api.sh", "go")
	cmd.Dir = filepath.Join("..", "..", "..")
	cmd.Env = append(os.Environ(), "GEN_API_GO_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/gen-api.sh go: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(filepath.Join(out, "api", "coordinator", "v1", "coordinator.swagger.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, committed) {
		t.Errorf("api/coordinator/v1/coordinator.swagger.json is not what scripts/gen-api.sh generates: run it\n--- generated:\n%.2000s", fresh)
	}
}
