package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/embervm/ember/guest/reaper"
	"golang.org/x/sys/unix"
)

// containerCloneFlags are the namespaces every container gets of its own.
// The network namespace is the VM's, shared by the pod's containers.
const containerCloneFlags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

// spawner starts container-init children: the agent's own binary again,
// with InitArg.
type spawner struct {
	exe    string
	reaper *reaper.Reaper
}

// start forks the init child with the process's stdio, the init socket and
// extra files (fd 4 on), then sends it cfg.
func (s *spawner) start(cfg *initConfig, io *stdio, extra []*os.File, cloneflags uintptr, pdeathsig bool) (*reaper.Waiter, *initConn, error) {
	conn, childSock, err := newInitConn()
	if err != nil {
		return nil, nil, err
	}
	defer childSock.Close()
	files := append(io.childFds(), childSock.Fd())
	for _, f := range extra {
		files = append(files, f.Fd())
	}
	sys := &syscall.SysProcAttr{Cloneflags: cloneflags}
	if pdeathsig {
		// If the agent dies (tests), its containers die with it.
		sys.Pdeathsig = unix.SIGKILL
	}
	w, err := s.reaper.Start(func() (int, error) {
		return syscall.ForkExec(s.exe, []string{"ember-agent-init", InitArg}, &syscall.ProcAttr{Files: files, Sys: sys})
	})
	if err != nil {
		conn.close()
		return nil, nil, fmt.Errorf("%w: start container init: %w", ErrSetup, err)
	}
	if err := conn.send(cfg); err != nil {
		_ = unix.Kill(w.Pid(), unix.SIGKILL)
		conn.close()
		return nil, nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return w, conn, nil
}

// expectReply waits for the child's reply of type want. On an error reply,
// EOF or ctx's end it makes sure the child is gone.
func expectReply(ctx context.Context, conn *initConn, w *reaper.Waiter, want replyType) (initReply, error) {
	r, err := conn.recv(ctx)
	if err == nil && r.Type == want {
		return r, nil
	}
	if err == nil && r.Type == replyError {
		err = r.asError()
	} else if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: container init exited during set-up", ErrSetup)
	} else if err == nil {
		err = fmt.Errorf("%w: unexpected reply %q from container init", ErrSetup, r.Type)
	}
	_ = unix.Kill(w.Pid(), unix.SIGKILL)
	// Reap it so no zombie is left; bounded by ctx.
	_, _ = w.Wait(context.WithoutCancel(ctx))
	return r, err
}
