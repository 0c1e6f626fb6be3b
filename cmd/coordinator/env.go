package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix starts the environment variables that set flags.
const envPrefix = "COORDINATOR_"

// envAnnotation marks a flag that an environment variable can set; its
// value is the variable's name.
const envAnnotation = "coordinator/env"

// envName is the variable that sets the flag called name: --dial-timeout is
// COORDINATOR_DIAL_TIMEOUT.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindEnv lets environment variables set the global flags and those of
// serve (a node run by a service manager takes its settings from an
// environment file, and a password kept out of the command line stays out
// of ps). A flag given on the command line wins over its variable. Each
// bound flag's help names its variable.
func bindEnv(root *cobra.Command, lookup func(string) (string, bool)) {
	mark := func(f *pflag.Flag) {
		name := envName(f.Name)
		if f.Annotations == nil {
			f.Annotations = map[string][]string{}
		}
		f.Annotations[envAnnotation] = []string{name}
		f.Usage += " [$" + name + "]"
	}
	root.PersistentFlags().VisitAll(mark)
	for _, c := range root.Commands() {
		if c.Name() == "serve" {
			c.Flags().VisitAll(mark)
		}
	}
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return applyEnv(cmd, lookup)
	}
}

// applyEnv sets each bound flag of cmd that the command line left unset
// from its variable, when that is set. Set marks the flag as given, so code
// that asks whether a flag was given (serve's choice of embedded etcd) sees
// the variable as given too. A bad value is a usage error naming the
// variable, never showing its value (it may be a secret).
func applyEnv(cmd *cobra.Command, lookup func(string) (string, bool)) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		names := f.Annotations[envAnnotation]
		if err != nil || f.Changed || len(names) == 0 {
			return
		}
		v, ok := lookup(names[0])
		if !ok {
			return
		}
		if serr := cmd.Flags().Set(f.Name, v); serr != nil {
			err = usagef("$%s is not a valid --%s (%s)", names[0], f.Name, f.Value.Type())
		}
	})
	return err
}
