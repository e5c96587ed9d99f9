package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/embervm/ember/guest/container"
	"golang.org/x/sys/unix"
)

// stopSignals end the agent: SIGTERM, SIGINT (what the kernel sends PID 1
// on Ctrl-Alt-Del once it is disabled) and SIGPWR. The containers get
// SIGTERM, then SIGKILL after grace.
var stopSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGPWR}

// forwardSignals are passed on to every running container's process.
var forwardSignals = []os.Signal{unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH}

func handleSignals(ctx context.Context, log *slog.Logger, mgr *container.Manager, grace time.Duration, stop context.CancelFunc) {
	c := make(chan os.Signal, 4)
	signal.Notify(c, append(append([]os.Signal{}, stopSignals...), forwardSignals...)...)
	defer signal.Stop(c)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-c:
			sig := s.(unix.Signal)
			if isStop(sig) {
				log.Info("stopping on signal", "signal", sig)
				sctx, cancel := context.WithTimeout(ctx, grace+5*time.Second)
				if err := mgr.StopAll(sctx, grace); err != nil {
					log.Warn("stop containers", "err", err)
				}
				cancel()
				stop()
				return
			}
			for _, ctr := range mgr.List() {
				if p := ctr.Init(); !p.Exited() {
					if err := p.Signal(sig, false); err != nil {
						log.Debug("forward signal", "container", ctr.ID(), "signal", sig, "err", err)
					}
				}
			}
		}
	}
}

func isStop(s unix.Signal) bool {
	for _, x := range stopSignals {
		if x == s {
			return true
		}
	}
	return false
}
