package main

import "github.com/spf13/cobra"

// The inspection and submission verbs are added in their own files.

func newSubmitCommand(g *globalOptions) *cobra.Command        { return &cobra.Command{Use: "submit"} }
func newStatusCommand(g *globalOptions) *cobra.Command        { return &cobra.Command{Use: "status"} }
func newRegistrationsCommand(g *globalOptions) *cobra.Command { return &cobra.Command{Use: "registrations"} }
func newOpsCommand(g *globalOptions) *cobra.Command           { return &cobra.Command{Use: "ops"} }
