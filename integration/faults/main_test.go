package faults

import (
	"testing"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, harness.Cleanup, suiteReadBacks.print) }
