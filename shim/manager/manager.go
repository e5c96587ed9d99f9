// Package manager starts and stops shim processes for containerd (the
// shim.Shim side of containerd's shim framework): `start` spawns the
// long-lived shim server for a pod (or reuses the pod's running one),
// `delete` cleans up after a shim that died.
package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"github.com/embervm/ember/shim/config"
	"github.com/embervm/ember/shim/vm"
	"golang.org/x/sys/unix"
)

var _ = shim.Shim(&Manager{})

// Name is the runtime name containerd knows the shim by.
const Name = "io.containerd.ember.v2"

// groupAnnotations put containers in one shim (and one VM): the first
// present wins; without any, a container is its own group.
var groupAnnotations = []string{"io.kubernetes.cri.sandbox-id", "io.containerd.ember.v2.group"}

// Manager implements shim.Shim.
type Manager struct{}

// New returns the manager.
func New() *Manager { return &Manager{} }

// Name returns the runtime name.
func (*Manager) Name() string { return Name }

// group returns the shim group of the bundle in the working directory.
func group(id string) (string, error) {
	b, err := os.ReadFile("config.json")
	if err != nil {
		return "", err
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", err
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// Start spawns the shim server for the container's group, or returns the
// address of the group's running shim.
func (*Manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	grp, err := group(id)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), grp, false)
	if err != nil {
		return nil, err
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("shim socket: %w", err)
		}
		if shim.CanConnect(addr) {
			// The pod's shim is running: the container joins it.
			return result, nil
		}
		if err := shim.RemoveSocket(addr); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if l, err = shim.NewSocket(addr); err != nil {
			return nil, fmt.Errorf("shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			l.Close()
			shim.RemoveSocket(addr)
		}
	}()
	f, err := l.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.ExtraFiles = []*os.File{f} // fd 3: the server's listener
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go cmd.Wait()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return result, nil
}

// Stop runs when containerd cleans up after a shim (`shim delete`): it
// kills the VM left behind, if any, and removes its state.
func (*Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	status := shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}
	cfg, err := config.Load(config.Path())
	if err != nil {
		log.G(ctx).WithError(err).Warn("shim delete: no configuration; nothing to clean up")
		return status, nil
	}
	ns, _ := namespaces.Namespace(ctx)
	grp, err := group(id)
	if err != nil {
		grp = id
	}
	for _, name := range []string{grp, id} {
		h := sha256.Sum256([]byte(ns + "/" + name))
		dir := filepath.Join(cfg.StateDir, hex.EncodeToString(h[:8]))
		if _, err := os.Stat(dir); err == nil {
			// Only the group's last container removes the VM: a pod's
			// other containers may still run in it, served by a live shim.
			if name == grp && grp != id && liveShim(dir) {
				continue
			}
			vm.Cleanup(dir, cfg)
			log.G(ctx).WithField("id", id).Infof("shim delete: cleaned up %s", dir)
		}
	}
	return status, nil
}

// liveShim reports whether the VM of dir still has a VMM running (so its
// shim is alive and owns it).
func liveShim(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, vm.PidFile))
	if err != nil {
		return false
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// Info describes the runtime.
func (*Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{Name: Name}, nil
}
