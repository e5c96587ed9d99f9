package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/guest/testrootfs"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/devices/bootmarker"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Benchmark sizes: enough for a stable median, little lab time.
const (
	pingRounds  = 200
	startRounds = 10
)

// TestNativeAgent boots the guest kernel with ember-agent as /init and a
// busybox rootfs on a read-only virtio-blk disk, then drives the agent
// over vsock (CONNECT 1024, ttrpc):
//   - boot markers MarkInit and MarkReady are recorded, the agent answers
//     Version (protocol 1) and Ping;
//   - containers on /dev/vda (ext4): "echo hello" prints hello and exits 0;
//     "sh -c 'exit 3'" exits 3;
//   - stdio: 2 MB of "seq" output and 4 MiB of stdin ("wc -c") arrive
//     whole and in order;
//   - the after-restore requests: SetTime steps the clock, AddEntropy
//     credits entropy, ConfigureNetwork gives the interface (by MAC) an
//     address the TAP side can then ping, Ready returns generation 1;
//   - Shutdown ends the VM cleanly, and the agent logged no warning or
//     error on the console;
//   - it logs the RPC round trip and the container start latency
//     (medians; docs/benchmarks.md, "Guest agent").
func TestNativeAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	uds := filepath.Join(t.TempDir(), "vsock.sock")
	v := startVM(t, ctx, boot.Config{
		Initrd: agentInitrd,
		Drives: []boot.Drive{{Path: rootfsImage, ReadOnly: true, ID: "rootfs"}},
		Nets: []boot.NetInterface{{HostAddr: netip.MustParsePrefix("172.31.0.1/24"),
			GuestMAC: guestMAC}},
		Vsock:   &boot.Vsock{GuestCID: 3, UDS: uds},
		Cmdline: "quiet",
	})
	c, err := client.Dial(ctx, uds, api.DefaultVsockPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	connected := time.Since(v.started)
	ver, err := c.Version(ctx, &api.VersionRequest{ClientProtocolVersion: api.ProtocolVersion})
	if err != nil || ver.ProtocolVersion != api.ProtocolVersion {
		t.Fatalf("version: %v %v", ver, err)
	}
	t.Logf("agent %s, features %v; connected %v after start", ver.AgentVersion, ver.Features, connected.Round(time.Millisecond))
	initMark, okInit := v.mark(bootmarker.MarkInit)
	readyMark, okReady := v.mark(bootmarker.MarkReady)
	if !okInit || !okReady {
		t.Errorf("boot markers %+v, want MarkInit and MarkReady", v.Marks())
	} else {
		t.Logf("boot markers: /init %v, agent ready %v", initMark.Elapsed.Round(time.Millisecond), readyMark.Elapsed.Round(time.Millisecond))
	}

	rootfs := &api.Rootfs{Source: "/dev/vda", Fstype: "ext4", Readonly: true}
	t.Run("containers", func(t *testing.T) {
		out, code := runContainer(t, ctx, c, "hello", rootfs, "echo", "hello")
		if out != "hello\n" || code != 0 {
			t.Errorf("echo hello: output %q, exit %d; want \"hello\\n\", 0", out, code)
		}
		out, code = runContainer(t, ctx, c, "exit3", rootfs, "sh", "-c", "exit 3")
		if out != "" || code != 3 {
			t.Errorf("sh -c 'exit 3': output %q, exit %d; want none, 3", out, code)
		}
	})
	t.Run("stdio", func(t *testing.T) {
		// Megabytes each way through virtio-vsock and ttrpc: flow control
		// with the real driver, nothing lost or reordered.
		out, code := runContainer(t, ctx, c, "seq", rootfs, "seq", "1", "300000")
		var want strings.Builder
		for i := 1; i <= 300000; i++ {
			fmt.Fprintf(&want, "%d\n", i)
		}
		if code != 0 || out != want.String() {
			t.Errorf("seq 1 300000: exit %d, %d bytes of output (want %d), equal %v", code, len(out), want.Len(), out == want.String())
		}
		in := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
		out, code = runContainerStdin(t, ctx, c, "wc", rootfs, in, "wc", "-c")
		if code != 0 || strings.TrimSpace(out) != fmt.Sprint(len(in)) {
			t.Errorf("wc -c of %d bytes of stdin: %q, exit %d", len(in), out, code)
		}
	})
	t.Run("latency", func(t *testing.T) {
		f := measureAgent(t, ctx, c, rootfs)
		t.Logf("LAB-FIGURE L2 (agent PID 1 in the VM, vsock): %s", f)
	})
	t.Run("restore-requests", func(t *testing.T) {
		now := time.Now()
		st, err := c.SetTime(ctx, &api.SetTimeRequest{UnixNano: now.Add(time.Hour).UnixNano()})
		if err != nil {
			t.Fatalf("SetTime: %v", err)
		}
		if step := time.Duration(st.StepNs); step < 59*time.Minute || step > 61*time.Minute {
			t.Errorf("SetTime +1h stepped the guest clock by %v", step)
		}
		if _, err := c.SetTime(ctx, &api.SetTimeRequest{UnixNano: time.Now().UnixNano()}); err != nil {
			t.Errorf("SetTime back: %v", err)
		}
		seed := make([]byte, 64)
		rand.Read(seed)
		ent, err := c.AddEntropy(ctx, &api.AddEntropyRequest{Data: seed})
		if err != nil {
			t.Fatalf("AddEntropy: %v", err)
		}
		if ent.EntropyAvail <= 0 {
			t.Errorf("entropy_avail %d after AddEntropy", ent.EntropyAvail)
		}
		_, err = c.ConfigureNetwork(ctx, &api.ConfigureNetworkRequest{
			Interfaces: []*api.Interface{{Mac: guestMAC, Name: "eth-e2e", Addresses: []string{"172.31.0.2/24"}}},
		})
		if err != nil {
			t.Fatalf("ConfigureNetwork: %v", err)
		}
		if err := ping(t, ctx, "172.31.0.2"); err != nil {
			t.Errorf("ping of the address ConfigureNetwork set: %v", err)
		}
		r, err := c.Ready(ctx, &api.ReadyRequest{VmId: "e2e", Hostname: "e2e-vm"})
		if err != nil || r.Generation != 1 {
			t.Errorf("Ready: %v %v, want generation 1", r, err)
		}
	})

	if _, err := c.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := v.waitEnd(t, ctx)
	t.Logf("VM ended %v after start", took.Round(time.Millisecond))
	// As PID 1 the agent came up and went down without complaint.
	if m := regexp.MustCompile(`(?m)^.*level=(WARN|ERROR).*$`).FindAllString(v.console.String(), -1); m != nil {
		t.Errorf("agent warnings or errors on the console:\n%s", strings.Join(m, "\n"))
	}
}

// figures are agent latencies (medians, and minima).
type figures struct {
	ping, start, exec, pingMin, startMin, execMin time.Duration
	// phases of the container start: Create, Start, Wait, Remove.
	phases [4]time.Duration
}

func (f figures) String() string {
	return fmt.Sprintf("Ping %v (min %v, %d calls); container start %v (min %v, %d runs; medians of Create %v, Start %v, Wait %v, Remove %v); exec %v (min %v, %d runs)",
		f.ping, f.pingMin, pingRounds, f.start, f.startMin, startRounds,
		f.phases[0], f.phases[1], f.phases[2], f.phases[3], f.exec, f.execMin, startRounds)
}

// measureAgent measures as guest/agent's BenchmarkPing,
// BenchmarkContainerRun and BenchmarkExec do: a Ping; Create + Start +
// Wait + Remove of /bin/true; Exec + Wait + Delete of /bin/true in a
// running container.
func measureAgent(t *testing.T, ctx context.Context, c *client.Client, rootfs *api.Rootfs) figures {
	t.Helper()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rtt := make([]time.Duration, pingRounds)
	for i := range rtt {
		s := time.Now()
		must(c.Ping(ctx, &api.PingRequest{Payload: []byte("x")}))
		rtt[i] = time.Since(s)
	}
	spec, _ := json.Marshal(testrootfs.Spec("true"))
	starts := make([]time.Duration, startRounds)
	var phases [4][]time.Duration
	for i := range starts {
		id := fmt.Sprintf("true%d", i)
		s := time.Now()
		lap := s
		phase := func(n int) {
			now := time.Now()
			phases[n] = append(phases[n], now.Sub(lap))
			lap = now
		}
		must(c.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: id, OciSpec: spec, Rootfs: rootfs}))
		phase(0)
		must(c.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}))
		phase(1)
		w, err := c.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: id}})
		must(w, err)
		phase(2)
		must(c.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: id}))
		phase(3)
		starts[i] = time.Since(s)
		if w.ExitStatus != 0 {
			t.Fatalf("true exited %d", w.ExitStatus)
		}
	}
	spec, _ = json.Marshal(testrootfs.Spec("sleep", "1000"))
	must(c.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "host", OciSpec: spec, Rootfs: rootfs}))
	must(c.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "host"}))
	proc, _ := json.Marshal(&specs.Process{Args: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	execs := make([]time.Duration, startRounds)
	for i := range execs {
		ref := &api.ProcessRef{ContainerId: "host", ExecId: fmt.Sprintf("e%d", i)}
		s := time.Now()
		must(c.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "host", ExecId: ref.ExecId, OciProcess: proc}))
		must(c.WaitProcess(ctx, &api.WaitProcessRequest{Process: ref}))
		must(c.DeleteProcess(ctx, &api.DeleteProcessRequest{Process: ref}))
		execs[i] = time.Since(s)
	}
	must(c.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "host", Force: true}))
	f := figures{ping: median(rtt), start: median(starts), exec: median(execs),
		pingMin: slices.Min(rtt), startMin: slices.Min(starts), execMin: slices.Min(execs)}
	for i := range phases {
		f.phases[i] = median(phases[i])
	}
	return f
}

// runContainer runs args in a new container on rootfs and returns its
// stdout and exit status; it removes the container.
func runContainer(t *testing.T, ctx context.Context, c *client.Client, id string, rootfs *api.Rootfs, args ...string) (string, uint32) {
	t.Helper()
	return runContainerStdin(t, ctx, c, id, rootfs, nil, args...)
}

// runContainerStdin is runContainer with stdin (when not nil) written to
// the process in 1 MiB requests, then closed.
func runContainerStdin(t *testing.T, ctx context.Context, c *client.Client, id string, rootfs *api.Rootfs, stdin []byte, args ...string) (string, uint32) {
	t.Helper()
	return runContainerSpec(t, ctx, c, id, rootfs, testrootfs.Spec(args...), stdin)
}

// runContainerSpec runs a container of spec and returns its output and
// exit status, as runContainerStdin.
func runContainerSpec(t *testing.T, ctx context.Context, c *client.Client, id string, rootfs *api.Rootfs, s *specs.Spec, stdin []byte) (string, uint32) {
	t.Helper()
	spec, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: id, OciSpec: spec, Rootfs: rootfs,
		Stdio: &api.Stdio{Stdin: stdin != nil}}); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	defer func() {
		if _, err := c.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: id, Force: true}); err != nil {
			t.Errorf("remove %s: %v", id, err)
		}
	}()
	if _, err := c.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	proc := &api.ProcessRef{ContainerId: id}
	stdinErr := make(chan error, 1)
	go func() {
		if stdin == nil {
			stdinErr <- nil
			return
		}
		for b := stdin; len(b) > 0; {
			n := min(len(b), 1<<20)
			if _, err := c.WriteStdin(ctx, &api.WriteStdinRequest{Process: proc, Data: b[:n]}); err != nil {
				stdinErr <- fmt.Errorf("write stdin: %w", err)
				return
			}
			b = b[n:]
		}
		_, err := c.CloseStdin(ctx, &api.CloseStdinRequest{Process: proc})
		stdinErr <- err
	}()
	var out bytes.Buffer
	for {
		r, err := c.ReadStdout(ctx, &api.ReadStreamRequest{Process: proc})
		if err != nil {
			t.Fatalf("read stdout of %s: %v", id, err)
		}
		out.Write(r.Data)
		if r.Eof {
			break
		}
	}
	if err := <-stdinErr; err != nil {
		t.Errorf("%s: %v", id, err)
	}
	w, err := c.WaitProcess(ctx, &api.WaitProcessRequest{Process: proc})
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	return out.String(), w.ExitStatus
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestNativeAgentBaseline runs the same agent binary as a process of the
// machine the VMs run on (L1 in the lab) on a Unix socket, with a busybox
// rootfs directory, and logs the figures TestNativeAgent measures in the
// VM: their ratio is the cost of the VM (KVM exits, virtio-vsock, the
// guest kernel) on the same emulated CPU.
func TestNativeAgentBaseline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if err := testrootfs.Build(root); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	// With cgroups, as PID 1 in the VM (the lab mounts cgroup2 in L1).
	cmd := exec.CommandContext(ctx, agentBinary, "-listen", "unix://"+sock, "-state-dir", filepath.Join(dir, "state"), "-cgroups")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	var conn net.Conn
	for {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent not listening: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	c := client.New(conn)
	defer c.Close()
	f := measureAgent(t, ctx, c, &api.Rootfs{Source: root})
	t.Logf("LAB-FIGURE L1 baseline (agent process, Unix socket, rootfs directory): %s", f)
}
