package main

import (
	"context"
	"os"

	"github.com/embervm/ember/internal/hostcheck"
)

func init() {
	register(&command{
		name:    "check",
		summary: "report whether this host can run ember, and how",
		run:     runCheck,
	})
}

func runCheck(ctx context.Context, args []string) error {
	fs := newFlagSet("check", "")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := hostcheck.Run(ctx)
	if *asJSON {
		if err := r.WriteJSON(os.Stdout); err != nil {
			return err
		}
	} else {
		r.WriteText(os.Stdout)
	}
	if !r.Usable {
		return &exitError{code: 1}
	}
	return nil
}
