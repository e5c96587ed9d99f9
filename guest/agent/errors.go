package agent

import (
	"context"
	"errors"

	"github.com/embervm/ember/guest/cgroups"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/identity"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrBadRequest is a request that cannot be decoded or lacks a field.
	ErrBadRequest = errors.New("bad request")
	// ErrNotConfigured: the agent was started without what the call
	// needs (e.g. no netlink handle).
	ErrNotConfigured = errors.New("not configured in this agent")
	// ErrShuttingDown: the agent is shutting down.
	ErrShuttingDown = errors.New("agent is shutting down")
)

// codeFor maps the guest packages' sentinel errors to ttrpc (gRPC) status
// codes. This is the only place where codes are chosen.
var codeFor = []struct {
	err  error
	code codes.Code
}{
	{ErrBadRequest, codes.InvalidArgument},
	{container.ErrInvalidSpec, codes.InvalidArgument},
	{identity.ErrInvalidTime, codes.InvalidArgument},
	{identity.ErrInvalidEntropy, codes.InvalidArgument},
	{identity.ErrInvalidNetwork, codes.InvalidArgument},
	{cgroups.ErrInvalidID, codes.InvalidArgument},
	{container.ErrNotFound, codes.NotFound},
	{identity.ErrNoInterface, codes.NotFound},
	{ErrNoBlockDevice, codes.DeadlineExceeded},
	{container.ErrExists, codes.AlreadyExists},
	{container.ErrInvalidState, codes.FailedPrecondition},
	{container.ErrNoTerminal, codes.FailedPrecondition},
	{container.ErrNoStdin, codes.FailedPrecondition},
	{container.ErrExec, codes.FailedPrecondition},
	{container.ErrSetup, codes.Internal},
	{container.ErrUnsupported, codes.Unimplemented},
	{ErrNotConfigured, codes.Unimplemented},
	{ErrShuttingDown, codes.Unavailable},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// toStatus converts an error for the wire; the message keeps the whole
// chain so the host sees why.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, m := range codeFor {
		if errors.Is(err, m.err) {
			return status.Error(m.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}
