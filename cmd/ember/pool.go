package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/embervm/ember/pool"
)

func init() {
	register(&command{
		name:    "pool",
		summary: "warm pool of paused VMs: serve, status, claim",
		run:     runPool,
	})
}

const defaultPoolSocket = "/run/ember/pool.sock"

func runPool(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: ember pool serve|status|claim [flags]")
	}
	switch args[0] {
	case "serve":
		return poolServe(ctx, args[1:])
	case "status":
		return poolStatus(ctx, args[1:])
	case "claim":
		return poolClaim(ctx, args[1:])
	}
	return fmt.Errorf("unknown pool command %q (have serve, status, claim)", args[0])
}

func poolServe(ctx context.Context, args []string) error {
	fs := newFlagSet("pool serve", "")
	cfgPath := fs.String("config", "", "pool configuration (JSON; see docs/pool.md) (required)")
	sock := fs.String("socket", defaultPoolSocket, "the pool's API socket (created 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("--config is required")
	}
	cfg, err := pool.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	cfg.ReadyDir = pool.ReadyDir(*sock) // where this socket's clients claim directly
	m, err := pool.New(*cfg, slog.Default())
	if err != nil {
		return err
	}
	defer m.Close()
	slog.Info("pool serving", "socket", *sock, "profiles", len(cfg.Profiles))
	return pool.Serve(ctx, m, *sock, slog.Default())
}

func poolStatus(ctx context.Context, args []string) error {
	fs := newFlagSet("pool status", "")
	sock := fs.String("socket", defaultPoolSocket, "the pool's API socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := pool.NewClient(*sock).Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(st)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tSIZE\tREADY\tSTARTING\tCLAIMED\tDIRECT\tCOLD\tFAILED\tREAPED")
	for _, p := range st {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", p.Name, p.Size, p.Ready, p.Starting, p.Claimed, p.Direct, p.Cold, p.Failed, p.Reaped)
	}
	return tw.Flush()
}

func poolClaim(ctx context.Context, args []string) error {
	fs := newFlagSet("pool claim", "")
	sock := fs.String("socket", defaultPoolSocket, "the pool's API socket")
	profile := fs.String("profile", "", "profile to claim from (required)")
	resume := fs.Bool("resume", false, "resume the VM before returning")
	id := fs.String("id", "", "name for the claimed VM")
	noCold := fs.Bool("no-cold", false, "fail when no VM is ready instead of starting one cold")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *profile == "" {
		return errors.New("--profile is required")
	}
	pc := pool.NewClient(*sock)
	defer pc.Close()
	c, err := pc.Claim(ctx, pool.ClaimRequest{Profile: *profile, ID: *id, Resume: *resume, NoCold: *noCold})
	if err != nil {
		return err
	}
	fmt.Printf("claimed %s (pid %d, %s) api socket %s in %v\n", c.ID, c.PID, c.Source, c.Socket, c.Total.Round(time.Microsecond))
	if c.Vsock != "" {
		fmt.Printf("vsock socket %s\n", c.Vsock)
	}
	if c.Console != "" {
		fmt.Printf("console %s\n", c.Console)
	}
	return nil
}
