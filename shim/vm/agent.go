package vm

import (
	"context"

	"github.com/embervm/ember/guest/api"
)

// Agent is the part of the guest agent's API (guest/api) the shim uses.
// guest/client's Client implements it; tests use fakes.
type Agent interface {
	CreateContainer(context.Context, *api.CreateContainerRequest) (*api.CreateContainerResponse, error)
	StartContainer(context.Context, *api.StartContainerRequest) (*api.StartContainerResponse, error)
	RemoveContainer(context.Context, *api.RemoveContainerRequest) (*api.RemoveContainerResponse, error)
	ExecProcess(context.Context, *api.ExecProcessRequest) (*api.ExecProcessResponse, error)
	SignalProcess(context.Context, *api.SignalProcessRequest) (*api.SignalProcessResponse, error)
	WaitProcess(context.Context, *api.WaitProcessRequest) (*api.WaitProcessResponse, error)
	WaitOOM(context.Context, *api.WaitOOMRequest) (*api.WaitOOMResponse, error)
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
	AddEntropy(context.Context, *api.AddEntropyRequest) (*api.AddEntropyResponse, error)
	WaitBlockDevice(context.Context, *api.WaitBlockDeviceRequest) (*api.WaitBlockDeviceResponse, error)
	ConfigureNetwork(context.Context, *api.ConfigureNetworkRequest) (*api.ConfigureNetworkResponse, error)
	Ready(context.Context, *api.ReadyRequest) (*api.ReadyResponse, error)
	Shutdown(context.Context, *api.ShutdownRequest) (*api.ShutdownResponse, error)
}
