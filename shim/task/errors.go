package task

import (
	"errors"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/embervm/ember/shim/config"
	"github.com/embervm/ember/shim/process"
	"github.com/embervm/ember/shim/rootfs"
	"github.com/embervm/ember/shim/stdio"
	"github.com/embervm/ember/shim/vm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors of the task service.
var (
	errNotFound      = errdefs.ErrNotFound
	errAlreadyExists = errdefs.ErrAlreadyExists
	errFinished      = errors.New("process already finished")
)

// toGRPC maps an error to a gRPC status at the API boundary (and only
// there): the shim's own sentinels first, then errdefs classes, then a
// status the agent returned (kept with the whole message).
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, errFinished), errdefs.IsNotFound(err):
		code = codes.NotFound
	case errors.Is(err, process.ErrTransition), errdefs.IsFailedPrecondition(err):
		code = codes.FailedPrecondition
	case errors.Is(err, vm.ErrNoHotAttach), errdefs.IsNotImplemented(err):
		code = codes.Unimplemented
	case errors.Is(err, config.ErrInvalid), errors.Is(err, rootfs.ErrUnsupported),
		errors.Is(err, stdio.ErrURI), errdefs.IsInvalidArgument(err):
		code = codes.InvalidArgument
	case errors.Is(err, vm.ErrDied):
		code = codes.Unavailable
	case errors.Is(err, vm.ErrNoFreeSlot):
		code = codes.ResourceExhausted
	case errdefs.IsAlreadyExists(err):
		code = codes.AlreadyExists
	default:
		if st, ok := status.FromError(err); ok {
			code = st.Code()
		} else {
			return errgrpc.ToGRPC(err)
		}
	}
	return status.Error(code, err.Error())
}
