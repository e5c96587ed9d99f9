package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// service implements api.AgentService: decode, call, encode. Errors are
// mapped to status codes by Agent.intercept.
type service struct {
	a *Agent
}

func (s *service) Version(ctx context.Context, req *api.VersionRequest) (*api.VersionResponse, error) {
	return &api.VersionResponse{
		ProtocolVersion: api.ProtocolVersion,
		AgentVersion:    Version,
		Features:        s.a.cfg.Features,
	}, nil
}

func (s *service) Ping(ctx context.Context, req *api.PingRequest) (*api.PingResponse, error) {
	return &api.PingResponse{Payload: req.Payload}, nil
}

func (s *service) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	if s.a.isShuttingDown() {
		return nil, ErrShuttingDown
	}
	spec, err := specFromAPI(req.OciSpec)
	if err != nil {
		return nil, err
	}
	rootfs, err := rootfsFromAPI(req.Rootfs)
	if err != nil {
		return nil, err
	}
	c, err := s.a.cfg.Containers.Create(ctx, container.CreateOptions{
		ID: req.ContainerId, Spec: spec, Rootfs: rootfs, Stdin: req.GetStdio().GetStdin(),
	})
	if err != nil {
		return nil, err
	}
	return &api.CreateContainerResponse{Pid: uint32(c.Init().Pid())}, nil
}

func (s *service) StartContainer(ctx context.Context, req *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	c, err := s.a.cfg.Containers.Get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return &api.StartContainerResponse{Pid: uint32(c.Init().Pid())}, nil
}

func (s *service) RemoveContainer(ctx context.Context, req *api.RemoveContainerRequest) (*api.RemoveContainerResponse, error) {
	if err := s.a.cfg.Containers.Remove(ctx, req.ContainerId, req.Force); err != nil {
		return nil, err
	}
	return &api.RemoveContainerResponse{}, nil
}

func (s *service) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	c, err := s.a.cfg.Containers.Get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	var proc specs.Process
	if err := decodeJSON("oci_process", req.OciProcess, &proc); err != nil {
		return nil, err
	}
	p, err := c.Exec(ctx, req.ExecId, &proc, req.GetStdio().GetStdin())
	if err != nil {
		return nil, err
	}
	return &api.ExecProcessResponse{Pid: uint32(p.Pid())}, nil
}

// process resolves a ProcessRef.
func (s *service) process(ref *api.ProcessRef) (*container.Process, error) {
	if ref == nil {
		return nil, fmt.Errorf("process is empty: %w", ErrBadRequest)
	}
	c, err := s.a.cfg.Containers.Get(ref.ContainerId)
	if err != nil {
		return nil, err
	}
	return c.Process(ref.ExecId)
}

func (s *service) SignalProcess(ctx context.Context, req *api.SignalProcessRequest) (*api.SignalProcessResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	if req.Signal == 0 || req.Signal > 64 {
		return nil, fmt.Errorf("signal %d: %w", req.Signal, ErrBadRequest)
	}
	if err := p.Signal(unix.Signal(req.Signal), req.Group); err != nil {
		return nil, err
	}
	return &api.SignalProcessResponse{}, nil
}

func (s *service) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	st, err := p.Wait(ctx)
	if err != nil {
		return nil, err
	}
	resp := &api.WaitProcessResponse{
		ExitStatus:       uint32(st.Code),
		Signal:           uint32(st.Signal),
		ExitedAtUnixNano: st.ExitedAt.UnixNano(),
	}
	// Read after the reap: an OOM kill that ended the process is counted
	// (the host reports it before the exit).
	if c, err := s.a.cfg.Containers.Get(req.Process.ContainerId); err == nil {
		resp.OomKills = c.OOMKills()
	}
	return resp, nil
}

func (s *service) WaitOOM(ctx context.Context, req *api.WaitOOMRequest) (*api.WaitOOMResponse, error) {
	c, err := s.a.cfg.Containers.Get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	n, stopped, err := c.WaitOOM(ctx, req.AfterOomKills)
	if err != nil {
		return nil, err
	}
	if n > req.AfterOomKills {
		s.a.log.Warn("OOM kill in container", "id", req.ContainerId, "oom_kills", n)
	}
	return &api.WaitOOMResponse{OomKills: n, Stopped: stopped}, nil
}

func (s *service) DeleteProcess(ctx context.Context, req *api.DeleteProcessRequest) (*api.DeleteProcessResponse, error) {
	if req.Process == nil {
		return nil, fmt.Errorf("process is empty: %w", ErrBadRequest)
	}
	c, err := s.a.cfg.Containers.Get(req.Process.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.DeleteProcess(req.Process.ExecId); err != nil {
		return nil, err
	}
	return &api.DeleteProcessResponse{}, nil
}

func (s *service) ReadStdout(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	data, eof, err := p.ReadStdout(ctx, readSize(req.MaxBytes))
	if err != nil {
		return nil, err
	}
	return &api.ReadStreamResponse{Data: data, Eof: eof}, nil
}

func (s *service) ReadStderr(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	data, eof, err := p.ReadStderr(ctx, readSize(req.MaxBytes))
	if err != nil {
		return nil, err
	}
	return &api.ReadStreamResponse{Data: data, Eof: eof}, nil
}

func (s *service) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	n, err := p.WriteStdin(ctx, req.Data)
	if err != nil {
		return nil, err
	}
	return &api.WriteStdinResponse{Written: uint32(n)}, nil
}

func (s *service) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (*api.CloseStdinResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	if err := p.CloseStdin(); err != nil {
		return nil, err
	}
	return &api.CloseStdinResponse{}, nil
}

func (s *service) ResizeTTY(ctx context.Context, req *api.ResizeTTYRequest) (*api.ResizeTTYResponse, error) {
	p, err := s.process(req.Process)
	if err != nil {
		return nil, err
	}
	if req.Rows > 0xffff || req.Cols > 0xffff {
		return nil, fmt.Errorf("size %dx%d: %w", req.Rows, req.Cols, ErrBadRequest)
	}
	if err := p.Resize(uint16(req.Rows), uint16(req.Cols)); err != nil {
		return nil, err
	}
	return &api.ResizeTTYResponse{}, nil
}

func (s *service) Stats(ctx context.Context, req *api.StatsRequest) (*api.StatsResponse, error) {
	c, err := s.a.cfg.Containers.Get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	st, src, err := c.Stats()
	if err != nil {
		return nil, err
	}
	return &api.StatsResponse{
		CpuUsageNs: st.CPUUsageNs, CpuUserNs: st.CPUUserNs, CpuSystemNs: st.CPUSystemNs,
		MemoryUsageBytes: st.MemoryUsage, MemoryLimitBytes: st.MemoryLimit,
		PidsCurrent: st.Pids, Source: src,
	}, nil
}

func (s *service) ListPids(ctx context.Context, req *api.ListPidsRequest) (*api.ListPidsResponse, error) {
	c, err := s.a.cfg.Containers.Get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	pids, err := c.Pids()
	if err != nil {
		return nil, err
	}
	out := make([]uint32, len(pids))
	for i, p := range pids {
		out[i] = uint32(p)
	}
	return &api.ListPidsResponse{Pids: out}, nil
}

func (s *service) UpdateResources(ctx context.Context, req *api.UpdateResourcesRequest) (*api.UpdateResourcesResponse, error) {
	c, err := s.a.cfg.Containers.Get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	var r specs.LinuxResources
	if err := decodeJSON("oci_resources", req.OciResources, &r); err != nil {
		return nil, err
	}
	if err := c.Update(&r); err != nil {
		return nil, err
	}
	return &api.UpdateResourcesResponse{}, nil
}

func (s *service) SetTime(ctx context.Context, req *api.SetTimeRequest) (*api.SetTimeResponse, error) {
	step, err := identity.SetClock(time.Unix(0, req.UnixNano))
	if err != nil {
		return nil, err
	}
	s.a.log.Info("clock stepped", "step", step)
	return &api.SetTimeResponse{StepNs: int64(step)}, nil
}

func (s *service) AddEntropy(ctx context.Context, req *api.AddEntropyRequest) (*api.AddEntropyResponse, error) {
	if err := identity.AddEntropy(s.a.cfg.EntropyDevice, req.Data, int(req.EntropyBits)); err != nil {
		return nil, err
	}
	return &api.AddEntropyResponse{EntropyAvail: int32(identity.EntropyAvail())}, nil
}

func (s *service) ConfigureNetwork(ctx context.Context, req *api.ConfigureNetworkRequest) (*api.ConfigureNetworkResponse, error) {
	if s.a.cfg.Network == nil {
		return nil, fmt.Errorf("network: %w", ErrNotConfigured)
	}
	cfg, err := networkFromAPI(req)
	if err != nil {
		return nil, err
	}
	if err := s.a.cfg.Network.Configure(cfg); err != nil {
		return nil, err
	}
	return &api.ConfigureNetworkResponse{}, nil
}

func (s *service) Ready(ctx context.Context, req *api.ReadyRequest) (*api.ReadyResponse, error) {
	if req.Hostname != "" && s.a.cfg.SetHostname != nil {
		if err := s.a.cfg.SetHostname(req.Hostname); err != nil {
			return nil, fmt.Errorf("set hostname: %w", err)
		}
	}
	gen := s.a.generation.Add(1)
	up, _ := identity.Uptime()
	s.a.log.Info("ready", "vm_id", req.VmId, "generation", gen, "uptime", up)
	return &api.ReadyResponse{Generation: gen, UptimeSeconds: up.Seconds()}, nil
}

func (s *service) Shutdown(ctx context.Context, req *api.ShutdownRequest) (*api.ShutdownResponse, error) {
	grace := time.Duration(req.GraceNs)
	if grace <= 0 {
		grace = s.a.cfg.ShutdownGrace
	}
	s.a.log.Info("shutdown requested", "grace", grace)
	err := s.a.cfg.Containers.StopAll(ctx, grace)
	s.a.requestShutdown()
	if err != nil {
		return nil, err
	}
	return &api.ShutdownResponse{}, nil
}
