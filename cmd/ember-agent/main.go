// Command ember-agent is the guest agent: PID 1 of every ember VM. It
// mounts the pseudo filesystems, reaps orphans, serves the agent API
// (guest/api) on vsock port 1024 and runs the containers the host asks for.
//
// Run as a normal process (tests, debugging) it skips the init duties:
//
//	ember-agent -listen unix:///tmp/agent.sock -state-dir /tmp/ember-state
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/embervm/ember/guest/agent"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/cgroups"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/identity"
	"github.com/embervm/ember/guest/reaper"
	"github.com/embervm/ember/guest/sysinit"
	"github.com/embervm/ember/guest/transport"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	// A container-init child is this binary re-executed; it never returns.
	container.RunInitIfRequested()
	os.Exit(run())
}

type options struct {
	listen   string
	stateDir string
	logLevel slog.Level
	cgroups  bool
	network  bool
	grace    time.Duration
}

func parseFlags(pid1 bool) options {
	var o options
	flag.StringVar(&o.listen, "listen", "vsock://"+strconv.Itoa(api.DefaultVsockPort), "listen address: vsock://PORT or unix://PATH")
	flag.StringVar(&o.stateDir, "state-dir", "/run/ember/containers", "directory for per-container state")
	flag.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log level (DEBUG, INFO, WARN, ERROR)")
	flag.BoolVar(&o.cgroups, "cgroups", pid1, "give containers cgroup v2 groups under /sys/fs/cgroup")
	flag.BoolVar(&o.network, "network", pid1, "serve ConfigureNetwork (changes this network namespace)")
	flag.DurationVar(&o.grace, "grace", 2*time.Second, "time between SIGTERM and SIGKILL at shutdown")
	flag.Parse()
	return o
}

func run() int {
	pid1 := sysinit.IsPID1()
	opts := parseFlags(pid1)
	console := sysinit.Console()
	log := slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: opts.logLevel}))
	slog.SetDefault(log)
	start := time.Now()

	if err := serve(log, opts, pid1); err != nil {
		log.Error("agent failed", "err", err)
		if pid1 {
			// PID 1 must not exit (the kernel would panic): power off.
			return powerOff(log)
		}
		return 1
	}
	log.Info("agent stopped", "after", time.Since(start))
	if pid1 {
		return powerOff(log)
	}
	return 0
}

func serve(log *slog.Logger, opts options, pid1 bool) error {
	mode := reaper.ModeRegistered
	if pid1 {
		if err := sysinit.WriteBootMarker(sysinit.MarkInit); err != nil {
			log.Debug("boot marker", "err", err)
		}
		if err := sysinit.MountAll(); err != nil {
			log.Warn("boot mounts", "err", err)
		}
		if err := sysinit.DisableCtrlAltDel(); err != nil {
			log.Warn("ctrl-alt-del", "err", err)
		}
		mode = reaper.ModeAll
	}
	r := reaper.New(mode)
	defer r.Stop()

	cfg := container.Config{StateDir: opts.stateDir, Reaper: r, Log: log}
	features := []string{"tty", "exec", "procfs-stats", "wait-block-device"}
	if opts.cgroups {
		h, err := cgroups.Open(cgroups.DefaultRoot, true)
		if err != nil {
			log.Warn("no cgroup v2: stats from procfs, no resource limits", "err", err)
		} else {
			cfg.Cgroups = h
			features = append(features, "cgroup2", "oom-events")
		}
	}
	acfg := agent.Config{
		Containers:    container.NewManager(cfg),
		EntropyDevice: "/dev/random",
		ShutdownGrace: opts.grace,
		Log:           log,
	}
	if pid1 {
		acfg.SetHostname = sysinit.SetHostname
	}
	if opts.network {
		// rtnetlink only: the guest kernel has no XFRM or netfilter, for which
		// netlink.NewHandle() would also open sockets (EPROTONOSUPPORT).
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		acfg.Network = &identity.Network{Handle: h, ResolvConf: "/etc/resolv.conf"}
		features = append(features, "netlink")
	}
	acfg.Features = features
	a, err := agent.New(acfg)
	if err != nil {
		return err
	}
	l, err := transport.Listen(opts.listen)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go handleSignals(ctx, log, acfg.Containers, opts.grace, cancel)
	sysinit.PrintReady(sysinit.Console(), opts.listen)
	if pid1 {
		if err := sysinit.WriteBootMarker(sysinit.MarkReady); err != nil {
			log.Debug("boot marker", "err", err)
		}
	}
	log.Info("serving", "listen", opts.listen, "pid1", pid1, "version", agent.Version, "features", features)
	err = a.Serve(ctx, l)
	// Replies written just before (to Shutdown, say) must leave the VM
	// before it powers off.
	if d, ok := l.(transport.Drainer); ok {
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if derr := d.Drain(dctx); derr != nil {
			log.Warn("connections not drained", "err", derr)
		}
		cancel()
	}
	return err
}

func powerOff(log *slog.Logger) int {
	log.Info("powering off")
	if err := sysinit.PowerOff(); err != nil {
		log.Error("power off", "err", err)
	}
	// Still here: wait for the end rather than make the kernel panic (not
	// with select{}, which the runtime may call a deadlock and exit).
	for {
		time.Sleep(time.Hour)
	}
}
