package vmmcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/internal/vmmproc"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/kvm"
)

// restoreForVMM restores a Linux snapshot for ember vmm --restore: the VM
// waits, paused, for a start or resume action; its console goes to
// consolePath (or is discarded); its vsock listens on vsockUDS (default:
// the API socket's path + ".vsock", unique per VMM, so that a warm pool
// can keep several restores of one snapshot). The working set starts
// installing at once (prefetch), while the VM waits. cleanup closes the VM
// and, for a recording restore, writes the working set first.
func restoreForVMM(ctx context.Context, sys *kvm.System, snap *snapshot.Snapshot, backendName, consolePath, apiSock, vsockUDS string) (*boot.Restored, vmmprocHooks, func(), error) {
	backend, err := snapshot.ParseBackend(backendName)
	if err != nil {
		return nil, vmmprocHooks{}, nil, err
	}
	var console *os.File
	opts := boot.RestoreOptions{Backend: backend}
	if consolePath != "" {
		if console, err = os.OpenFile(consolePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return nil, vmmprocHooks{}, nil, err
		}
		opts.Console = console
	}
	if vsockUDS == "" {
		vsockUDS = apiSock + ".vsock"
	}
	opts.VsockUDS = vsockUDS
	r, err := boot.RestoreFrom(ctx, sys, snap, opts)
	if err != nil {
		if console != nil {
			console.Close()
		}
		return nil, vmmprocHooks{}, nil, err
	}
	r.Memory.StartPrefetch()
	hooks := vmmprocHooks{
		VsockUDS: vsockUDS,
		Snapshot: linuxSnapshotHook(r.VM),
		Restore: func() *api.RestoreStats {
			s := r.Memory.Stats()
			return &api.RestoreStats{Backend: string(s.Backend), Duration: r.Took, Faults: s.FaultsServed,
				BytesRead: s.BytesRead, PagesZeroed: s.PagesZeroFilled, PagesFetched: s.PagesPrefetched}
		},
	}
	cleanup := func() {
		saveWorkingSet(r.Machine, r.Memory)
		r.Close()
		if console != nil {
			console.Close()
		}
	}
	return r, hooks, cleanup, nil
}

// restoreTestGuestForVMM restores a test-guest snapshot for ember vmm
// --restore: the guest waits, paused, for a start or resume action, and
// /identity writes the nonce where IdentityProgram-style guests wait for
// it. The working set starts installing at once (prefetch), while the VM
// waits. cleanup closes the VM and, for a recording restore of a guest
// that ran, writes the working set first.
func restoreTestGuestForVMM(ctx context.Context, sys *kvm.System, snap *snapshot.Snapshot, backendName string) (*guestrun.Prepared, vmmproc.Hooks, func(), error) {
	backend, err := snapshot.ParseBackend(backendName)
	if err != nil {
		return nil, vmmproc.Hooks{}, nil, err
	}
	p, err := guestrun.Prepare(ctx, sys, snap, snapshot.MemoryOptions{Backend: backend})
	if err != nil {
		return nil, vmmproc.Hooks{}, nil, err
	}
	p.Memory.StartPrefetch()
	acc := p.Memory.Accessor()
	hooks := vmmproc.Hooks{
		Reports: p.Reports, FirstReport: p.Ports.FirstWrite,
		ApplyIdentity: func(_ context.Context, idn api.Identity) error {
			return testguest.WriteIdentity(acc, idn.Nonce)
		},
		PrepareIdentity: func() error { return testguest.PrepareIdentity(acc) },
		Restore: func() *api.RestoreStats {
			s := p.Memory.Stats()
			return &api.RestoreStats{Backend: string(s.Backend), Duration: p.Took, Faults: s.FaultsServed,
				BytesRead: s.BytesRead, PagesZeroed: s.PagesZeroFilled, PagesFetched: s.PagesPrefetched}
		},
	}
	cleanup := func() {
		if p.VCPUs()[0].Exits() > 0 { // it ran: there is a working set
			saveWorkingSet(p.Machine, p.Memory)
		}
		p.Close()
	}
	return p, hooks, cleanup, nil
}

// saveWorkingSet stops m and writes the working set that mem recorded,
// if it is a recording restore's memory and served every fault.
func saveWorkingSet(m *vmm.Machine, mem *snapshot.Memory) {
	if !mem.Stats().Recording || mem.Err() != nil {
		return
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	m.Stop(stopCtx)
	cancel()
	if _, err := mem.SaveWorkingSet(); err != nil {
		slog.Warn("saving the working set", "err", err)
	}
}

// vmmprocHooks are the vmmproc.Hooks fields a Linux VM fills in.
type vmmprocHooks struct {
	Snapshot func(ctx context.Context, req api.SnapshotRequest) error
	Restore  func() *api.RestoreStats
	// VsockUDS is the restored VM's vsock socket (its agent's way in).
	VsockUDS string
}

// linuxSnapshotHook is the /snapshot hook of a Linux VM (booted with
// --config or restored): a snapshot of the paused VM; a diff names the
// previous snapshot this hook wrote as its parent.
func linuxSnapshotHook(vm *boot.VM) func(ctx context.Context, req api.SnapshotRequest) error {
	var mu sync.Mutex
	var last snapshot.ID
	return func(ctx context.Context, req api.SnapshotRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if req.Dir == "" {
			return fmt.Errorf("%w: snapshot needs a directory", api.ErrBadRequest)
		}
		if req.Diff && last.IsZero() {
			return fmt.Errorf("%w: a diff needs an earlier full snapshot from this VMM", api.ErrConflict)
		}
		st, _, err := vm.Snapshot(ctx, req.Dir, boot.SnapshotOptions{Diff: req.Diff, Parent: last})
		if err != nil {
			if errors.Is(err, boot.ErrDiffWithVirtio) || errors.Is(err, boot.ErrSnapshot) {
				return fmt.Errorf("%w: %w", api.ErrConflict, err)
			}
			return err
		}
		last = st.ID
		return nil
	}
}
