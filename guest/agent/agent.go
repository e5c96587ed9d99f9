// Package agent is the ember guest agent's RPC service: it serves
// ember.agent.v1.Agent (guest/api) over ttrpc on one listener (vsock in a
// VM, a Unix socket in tests) and drives the container, identity and
// cgroups packages.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/identity"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Version is the agent's build version, reported by the Version call; the
// linker may set it (-X).
var Version = "dev"

// Config is what the agent works with. Only Containers is required.
type Config struct {
	Containers *container.Manager
	// Network configures interfaces; nil refuses ConfigureNetwork.
	Network *identity.Network
	// EntropyDevice receives AddEntropy ("/dev/random").
	EntropyDevice string
	// SetHostname is called by Ready with a hostname; nil ignores it (a
	// test must not rename its host).
	SetHostname func(string) error
	// Features are reported by Version.
	Features []string
	// ShutdownGrace is the default time between SIGTERM and SIGKILL.
	ShutdownGrace time.Duration
	// SysBlock and DevDir are where WaitBlockDevice looks for disks
	// (defaults /sys/block and /dev).
	SysBlock, DevDir string
	Log              *slog.Logger
}

// Agent serves the agent API.
type Agent struct {
	cfg Config
	log *slog.Logger
	srv *ttrpc.Server

	generation atomic.Uint64
	replies    replies
	shutdownMu sync.Mutex
	shutdown   chan struct{} // closed by the Shutdown call
}

var _ api.AgentService = (*service)(nil)

// New builds an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Containers == nil {
		return nil, errors.New("agent: Config.Containers is nil")
	}
	if cfg.EntropyDevice == "" {
		cfg.EntropyDevice = "/dev/random"
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 2 * time.Second
	}
	if cfg.SysBlock == "" {
		cfg.SysBlock = "/sys/block"
	}
	if cfg.DevDir == "" {
		cfg.DevDir = "/dev"
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, log: log, shutdown: make(chan struct{})}
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(a.intercept))
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	api.RegisterAgentService(srv, &service{a: a})
	a.srv = srv
	return a, nil
}

// Serve answers requests on l until ctx ends or a Shutdown call completed.
// It returns nil in both cases.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(ctx, countingListener{Listener: l, r: &a.replies}) }()
	select {
	case err := <-errc:
		if errors.Is(err, ttrpc.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("agent: serve: %w", err)
	case <-ctx.Done():
		a.srv.Close()
	case <-a.shutdown:
		// Let the Shutdown reply go out, then close.
		if !a.replies.wait(time.Second) {
			a.log.Warn("shutdown: replies still unwritten after 1s")
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = a.srv.Shutdown(sctx)
		cancel()
		a.srv.Close()
	}
	<-errc
	return nil
}

// ShutdownRequested is closed once a Shutdown call stopped the containers.
func (a *Agent) ShutdownRequested() <-chan struct{} { return a.shutdown }

// intercept decodes, logs and maps errors to status codes for every call.
func (a *Agent) intercept(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	decode := func(v any) error {
		if err := unmarshal(v); err != nil {
			return status.Errorf(codes.InvalidArgument, "%s: cannot decode request: %v", info.FullMethod, err)
		}
		return nil
	}
	a.replies.begin()
	defer a.replies.end()
	start := time.Now()
	resp, err := method(ctx, decode)
	if err != nil {
		err = toStatus(err)
		a.log.Warn("request failed", "method", info.FullMethod, "err", err, "took", time.Since(start))
		return nil, err
	}
	a.log.Debug("request", "method", info.FullMethod, "took", time.Since(start))
	return resp, nil
}

func (a *Agent) requestShutdown() {
	a.shutdownMu.Lock()
	defer a.shutdownMu.Unlock()
	select {
	case <-a.shutdown:
	default:
		close(a.shutdown)
	}
}

func (a *Agent) isShuttingDown() bool {
	select {
	case <-a.shutdown:
		return true
	default:
		return false
	}
}
