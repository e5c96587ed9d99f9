package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
)

// Agent is the part of the guest agent's API (guest/api) the shim uses.
// The generated ttrpc client implements it; tests use fakes.
type Agent interface {
	CreateContainer(context.Context, *api.CreateContainerRequest) (*api.CreateContainerResponse, error)
	StartContainer(context.Context, *api.StartContainerRequest) (*api.StartContainerResponse, error)
	RemoveContainer(context.Context, *api.RemoveContainerRequest) (*api.RemoveContainerResponse, error)
	ExecProcess(context.Context, *api.ExecProcessRequest) (*api.ExecProcessResponse, error)
	SignalProcess(context.Context, *api.SignalProcessRequest) (*api.SignalProcessResponse, error)
	WaitProcess(context.Context, *api.WaitProcessRequest) (*api.WaitProcessResponse, error)
	DeleteProcess(context.Context, *api.DeleteProcessRequest) (*api.DeleteProcessResponse, error)
	ReadStdout(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error)
	ReadStderr(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error)
	WriteStdin(context.Context, *api.WriteStdinRequest) (*api.WriteStdinResponse, error)
	CloseStdin(context.Context, *api.CloseStdinRequest) (*api.CloseStdinResponse, error)
	ResizeTTY(context.Context, *api.ResizeTTYRequest) (*api.ResizeTTYResponse, error)
	Stats(context.Context, *api.StatsRequest) (*api.StatsResponse, error)
	ListPids(context.Context, *api.ListPidsRequest) (*api.ListPidsResponse, error)
	UpdateResources(context.Context, *api.UpdateResourcesRequest) (*api.UpdateResourcesResponse, error)
	SetTime(context.Context, *api.SetTimeRequest) (*api.SetTimeResponse, error)
	Ready(context.Context, *api.ReadyRequest) (*api.ReadyResponse, error)
	Shutdown(context.Context, *api.ShutdownRequest) (*api.ShutdownResponse, error)
}

// errHandshake: the VMM's vsock socket did not answer OK (the agent is not
// listening yet).
var errHandshake = errors.New("vsock handshake failed")

// connectVsock connects to guest port through the VMM's vsock Unix socket
// (docs/devices.md: "CONNECT <port>\n" → "OK <hostport>\n").
func connectVsock(ctx context.Context, uds string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %w", errHandshake, err)
	}
	// Byte by byte: what follows the newline is the agent's.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := conn.Read(b); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%w: %w", errHandshake, err)
		}
		if b[0] == '\n' {
			arg, ok := strings.CutPrefix(strings.TrimSuffix(string(line), "\r"), "OK ")
			if _, perr := strconv.ParseUint(arg, 10, 32); !ok || perr != nil {
				conn.Close()
				return nil, fmt.Errorf("%w: reply %q", errHandshake, line)
			}
			conn.SetDeadline(time.Time{})
			return conn, nil
		}
		line = append(line, b[0])
	}
	conn.Close()
	return nil, fmt.Errorf("%w: reply too long", errHandshake)
}

// dialAgent connects to the agent, retrying while it boots, until ctx ends
// or dead is closed (the VMM exited).
func dialAgent(ctx context.Context, uds string, dead <-chan struct{}) (*ttrpc.Client, error) {
	interval := 5 * time.Millisecond
	for {
		conn, err := connectVsock(ctx, uds, api.DefaultVsockPort)
		if err == nil {
			return ttrpc.NewClient(conn), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent did not answer on %s: %w (last: %w)", uds, ctx.Err(), err)
		case <-dead:
			return nil, fmt.Errorf("VMM exited before the agent answered (last: %w)", err)
		case <-time.After(interval):
		}
		interval = min(interval*2, 50*time.Millisecond)
	}
}
