package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/ociimage"
)

const (
	// criNamespace is the containerd namespace of the CRI's images and
	// containers.
	criNamespace = "k8s.io"
	// criHandler is the CRI runtime handler (a RuntimeClass's handler).
	criHandler = "ember"
	// pauseImage is the pod sandbox image: busybox sleeping until killed,
	// imported by the test. Its registry does not exist, so a pull would
	// fail.
	pauseImage = "ember.invalid/e2e/pause:1"
	// criSubnet is the CNI bridge's subnet for the CRI's pods.
	criSubnet = "10.88.9.0/24"
)

// criEnv is a containerd with its CRI plugins, driven by crictl.
type criEnv struct {
	*env
	crictlCfg string // crictl's configuration file
	podLogDir string // the pod's log_directory
}

// startCRI starts containerd with the CRI plugins: runtime handler ember
// (the shim), a CNI conflist of bridge + host-local (the CRI runs
// loopback itself), the pause image as its pinned sandbox image, network
// namespaces under containerd's state directory. It imports the busybox
// and pause images into the CRI's namespace.
func startCRI(t *testing.T) *criEnv {
	var cniConfDir string
	e := startContainerdCfg(t, `backend = "boot"`, func(root string) string {
		cniConfDir = filepath.Join(root, "cni-conf")
		conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ember-cri","plugins":[
{"type":"bridge","bridge":"ember-cri0","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}]}`,
			criSubnet, filepath.Join(root, "cni-ipam"))
		if err := os.MkdirAll(cniConfDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cniConfDir, "10-ember-cri.conflist"), []byte(conflist), 0o644); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.%s]
    runtime_type = %q
    pod_annotations = ["ember.vm.*"]
    container_annotations = ["ember.vm.*"]
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%q]
    conf_dir = %q
    max_conf_num = 1
`, pauseImage, criHandler, runtimeName, cniBinDir, cniConfDir)
	})
	e.ns = criNamespace
	c := &criEnv{env: e, crictlCfg: filepath.Join(e.root, "crictl.yaml"), podLogDir: filepath.Join(e.root, "pod-logs")}
	// Under TCG a VM boot alone takes seconds: crictl's default timeout
	// (2 s) is far too short.
	cfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 180\npull-image-on-create: false\n", e.sock, e.sock)
	if err := os.WriteFile(c.crictlCfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The CRI copies the host's /etc/hosts into every pod; the lab's L1
	// has none.
	if _, err := os.Stat("/etc/hosts"); os.IsNotExist(err) {
		if err := os.WriteFile("/etc/hosts", []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/etc/hosts") })
	}
	for _, img := range []struct {
		name string
		opts []ociimage.Option
	}{
		{imageName, nil},
		// The sandbox's process only has to live until the CRI kills it.
		{pauseImage, []ociimage.Option{ociimage.Entrypoint("sh", "-c", "while :; do sleep 3600; done"), ociimage.Cmd()}},
	} {
		b, err := ociimage.Busybox("/bin/busybox", img.name, img.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := e.ctrIn(string(b), "images", "import", "-"); err != nil || r.code != 0 {
			t.Fatalf("ctr images import %s: %v %+v\n%s", img.name, err, r, e.logTail())
		}
	}
	// The CRI learns of imported images from containerd's events.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.crictl("images", "-q")
		if r.code == 0 && strings.Count(r.stdout, "sha256:") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("crictl images after the import: %+v", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

// crictl runs crictl against the test's containerd.
func (c *criEnv) crictl(args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "crictl"), append([]string{"--config", c.crictlCfg}, args...)...)
	cmd.Env = c.envv
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		r.code, r.stderr = -1, r.stderr+err.Error()
	}
	return r
}

// mustCrictl runs crictl and fails the test unless it succeeds.
func (c *criEnv) mustCrictl(t *testing.T, args ...string) result {
	t.Helper()
	r := c.crictl(args...)
	if r.code != 0 {
		t.Fatalf("crictl %v: exit %d\nstdout: %s\nstderr: %s\ncontainerd log:\n%s", args, r.code, r.stdout, r.stderr, c.logTail())
	}
	return r
}

// writeJSON writes v as JSON into the test's root directory.
func (c *criEnv) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(c.root, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// containerState is crictl inspect's view of a container.
type containerState struct {
	Status struct {
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		Message  string `json:"message"`
	} `json:"status"`
}

func (c *criEnv) inspect(t *testing.T, id string) containerState {
	t.Helper()
	var st containerState
	r := c.mustCrictl(t, "inspect", "-o", "json", id)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("crictl inspect %s: %v\n%s", id, err, r.stdout)
	}
	return st
}

// vmmProcesses lists the VMM processes of the test's shim.
func (c *criEnv) vmmProcesses() []string {
	var out []string
	for _, l := range c.leftovers() {
		if strings.HasPrefix(l, "process ") && strings.Contains(l, " vmm ") {
			out = append(out, l)
		}
	}
	return out
}

// tapDevices lists the TAP devices of the current network namespace.
func tapDevices() []string {
	flags, _ := filepath.Glob("/sys/class/net/*/tun_flags")
	var out []string
	for _, f := range flags {
		out = append(out, filepath.Base(filepath.Dir(f)))
	}
	return out
}

// tapDevicesIn lists the TAP devices in the network namespace at path.
func tapDevicesIn(path string) ([]string, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if l.Type() == "tuntap" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// mountsUnder lists the mount points below dir.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			out = append(out, f[1])
		}
	}
	return out
}

// TestNativeCRI runs a Kubernetes-style pod through containerd's CRI and
// crictl with the runtime handler ember (what a RuntimeClass names): the
// pod sandbox (the pause container) boots the pod's VM with the pod's CNI
// network, two containers join that VM, and crictl ps, logs, exec,
// inspectp, stats, update, stopp and rmp work; afterwards nothing is left.
func TestNativeCRI(t *testing.T) {
	c := startCRI(t)
	const hostname, podDNS = "ember-cri-pod", "10.88.9.53"
	podCfg := c.writeJSON(t, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "ember-cri", "namespace": "e2e", "uid": "ember-cri-uid", "attempt": 0},
		"hostname":      hostname,
		"log_directory": c.podLogDir,
		// Without a DNS config the CRI copies the host's resolv.conf.
		"dns_config": map[string]any{"servers": []string{podDNS}, "searches": []string{"e2e.svc.cluster.local"}},
		"linux":      map[string]any{},
	})
	ctrCfg := func(name string, script string) string {
		return c.writeJSON(t, name+".json", map[string]any{
			"metadata": map[string]any{"name": name},
			"image":    map[string]any{"image": imageName},
			"command":  []string{"sh", "-c", script},
			"log_path": name + ".log",
			"linux":    map[string]any{},
		})
	}

	r := c.mustCrictl(t, "runp", "--runtime", criHandler, podCfg)
	pod := strings.TrimSpace(r.stdout)
	t.Logf("crictl runp (pause container, VM boot with the pod network): %v", r.took.Round(time.Millisecond))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.crictl("stopp", pod)
			c.crictl("rmp", "-f", pod)
		}
	})

	var podStatus struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	r = c.mustCrictl(t, "inspectp", "-o", "json", pod)
	if err := json.Unmarshal([]byte(r.stdout), &podStatus); err != nil {
		t.Fatalf("crictl inspectp: %v\n%s", err, r.stdout)
	}
	podIP := podStatus.Status.Network.IP
	if podStatus.Status.State != "SANDBOX_READY" || !strings.HasPrefix(podIP, "10.88.9.") {
		t.Fatalf("pod state %q, IP %q (want ready, in %s)", podStatus.Status.State, podIP, criSubnet)
	}
	t.Logf("pod %.12s ready, CNI address %s", pod, podIP)
	var podNetNS string // the pod's network namespace, mounted by the CRI
	for _, ns := range podStatus.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			podNetNS = ns.Path
		}
	}
	if podNetNS == "" {
		t.Fatalf("crictl inspectp names no network namespace for the pod:\n%s", r.stdout)
	}

	// writer echoes and writes a file, then exits; sleeper runs on.
	writer := strings.TrimSpace(c.mustCrictl(t, "create", pod, ctrCfg("writer",
		"echo hello-from-writer; echo boot=$(cat /proc/sys/kernel/random/boot_id); echo written > /tmp/f; cat /tmp/f"), podCfg).stdout)
	sleeper := strings.TrimSpace(c.mustCrictl(t, "create", pod, ctrCfg("sleeper",
		"echo sleeper-up; while :; do sleep 1; done"), podCfg).stdout)
	for _, id := range []string{sleeper, writer} {
		r := c.mustCrictl(t, "start", id)
		t.Logf("crictl start %.12s: %v", id, r.took.Round(time.Millisecond))
	}

	t.Run("OneVM", func(t *testing.T) {
		if vmms := c.vmmProcesses(); len(vmms) != 1 {
			t.Errorf("%d VMM processes for the pod, want 1:\n%s", len(vmms), strings.Join(vmms, "\n"))
		}
		dirs, _ := os.ReadDir(c.stateDir)
		vms := 0
		for _, d := range dirs {
			if d.Name() != "consoles" {
				vms++
			}
		}
		if vms != 1 {
			t.Errorf("%d VM state directories for one pod", vms)
		}
		// The VM's TAP device is in the pod's network namespace (where
		// the CNI put the pod's address), not in this one: the leftover
		// checks at the end look in both.
		if taps, err := tapDevicesIn(podNetNS); err != nil || len(taps) != 1 {
			t.Errorf("TAP devices in the pod's network namespace: %v (%v), want the VM's one", taps, err)
		}
		if taps := tapDevices(); len(taps) != 0 {
			t.Errorf("TAP devices in the host's network namespace: %v", taps)
		}
	})

	var writerBoot string
	t.Run("WriterExitsAndLogs", func(t *testing.T) {
		deadline := time.Now().Add(time.Minute)
		for {
			st := c.inspect(t, writer)
			if st.Status.State == "CONTAINER_EXITED" {
				if st.Status.ExitCode != 0 {
					t.Errorf("writer exited %d (%s %s)", st.Status.ExitCode, st.Status.Reason, st.Status.Message)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("writer not exited after a minute: %+v", st.Status)
			}
			time.Sleep(300 * time.Millisecond)
		}
		logs := c.mustCrictl(t, "logs", writer)
		for _, want := range []string{"hello-from-writer\n", "written\n"} {
			if !strings.Contains(logs.stdout, want) {
				t.Errorf("crictl logs writer: %q lacks %q (stderr %q)", logs.stdout, want, logs.stderr)
			}
		}
		if _, b, ok := strings.Cut(logs.stdout, "boot="); ok {
			writerBoot, _, _ = strings.Cut(b, "\n")
		}
		if logs := c.mustCrictl(t, "logs", sleeper); !strings.Contains(logs.stdout, "sleeper-up") {
			t.Errorf("crictl logs sleeper: %q", logs.stdout)
		}
	})

	t.Run("Ps", func(t *testing.T) {
		r := c.mustCrictl(t, "ps", "-q", "--pod", pod)
		if ids := strings.Fields(r.stdout); len(ids) != 1 || ids[0] != sleeper {
			t.Errorf("crictl ps (running): %q, want only the sleeper %s", ids, sleeper)
		}
		r = c.mustCrictl(t, "ps", "-a", "-q", "--pod", pod)
		if ids := strings.Fields(r.stdout); len(ids) != 2 {
			t.Errorf("crictl ps -a: %q, want the two containers", ids)
		}
	})

	t.Run("ExecSync", func(t *testing.T) {
		r := c.mustCrictl(t, "exec", "-s", sleeper, "sh", "-c",
			"cat /proc/sys/kernel/random/boot_id; hostname; ip -4 addr show; ls -d /dev/shm; cat /etc/resolv.conf")
		t.Logf("crictl exec -s: %v", r.took.Round(time.Millisecond))
		// The pod's address from CNI, its hostname, a /dev/shm and its
		// DNS settings (pod.json's dns_config).
		for _, want := range []string{"inet " + podIP + "/", hostname + "\n", "/dev/shm\n", "nameserver " + podDNS + "\n"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("exec output lacks %q:\n%s\n%s", want, r.stdout, r.stderr)
			}
		}
		// The kernel's boot id: both containers ran in one guest kernel.
		if boot, _, _ := strings.Cut(r.stdout, "\n"); writerBoot == "" || boot != writerBoot {
			t.Errorf("sleeper's boot id %q, writer's %q: not one VM", boot, writerBoot)
		}
		// crictl itself exits 1 and names the command's status.
		if r := c.crictl("exec", "-s", sleeper, "sh", "-c", "exit 7"); r.code == 0 || !strings.Contains(r.stderr, "exited with 7") {
			t.Errorf("crictl exec -s ... exit 7: exit %d (%s)", r.code, r.stderr)
		}
	})

	t.Run("ExecStream", func(t *testing.T) {
		// Through the CRI's streaming server, as kubectl exec goes.
		r := c.mustCrictl(t, "exec", sleeper, "echo", "streamed")
		if strings.TrimSpace(r.stdout) != "streamed" {
			t.Errorf("crictl exec: stdout %q stderr %q", r.stdout, r.stderr)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		var stats struct {
			Stats []struct {
				Memory struct {
					WorkingSetBytes struct {
						Value json.Number `json:"value"`
					} `json:"workingSetBytes"`
				} `json:"memory"`
			} `json:"stats"`
		}
		r := c.mustCrictl(t, "stats", "-o", "json", "--id", sleeper)
		if err := json.Unmarshal([]byte(r.stdout), &stats); err != nil || len(stats.Stats) != 1 {
			t.Fatalf("crictl stats: %v\n%s", err, r.stdout)
		}
		if v := stats.Stats[0].Memory.WorkingSetBytes.Value; v == "" || v == "0" {
			t.Errorf("sleeper's working set %q", v)
		}
	})

	t.Run("Update", func(t *testing.T) {
		// UpdateContainerResources reaches the container's cgroup in the
		// guest: 64 MiB fit in the sleeper before, not after its limit
		// went down to 20 MiB (the exec'd process is the OOM victim; the
		// container runs on).
		exec := append([]string{"exec", "-s", sleeper}, hog...)
		if r := c.crictl(exec...); r.code != 0 {
			t.Fatalf("64 MiB in the sleeper before the update: exit %d (%s)", r.code, r.stderr)
		}
		c.mustCrictl(t, "update", "--memory", oomLimit, sleeper)
		if r := c.crictl(exec...); r.code == 0 || !strings.Contains(r.stderr, "exited with 137") {
			t.Errorf("64 MiB in the sleeper limited to %s bytes: exit %d (%s), want the OOM kill's 137", oomLimit, r.code, r.stderr)
		}
		if st := c.inspect(t, sleeper); st.Status.State != "CONTAINER_RUNNING" {
			t.Errorf("sleeper after update: %+v", st.Status)
		}
	})

	t.Run("StopAndRemove", func(t *testing.T) {
		r := c.mustCrictl(t, "stopp", pod)
		t.Logf("crictl stopp: %v", r.took.Round(time.Millisecond))
		c.mustCrictl(t, "rmp", pod)
		stopped = true
		if r := c.mustCrictl(t, "pods", "-q"); strings.TrimSpace(r.stdout) != "" {
			t.Errorf("pods after rmp: %q", r.stdout)
		}
		c.waitNoLeftovers(t)
		if taps := tapDevices(); len(taps) != 0 {
			t.Errorf("TAP devices left: %v", taps)
		}
		if m := mountsUnder(c.root); len(m) != 0 {
			t.Errorf("mounts left under %s: %v", c.root, m)
		}
		if netns, _ := filepath.Glob(filepath.Join(filepath.Dir(podNetNS), "*")); len(netns) != 0 {
			t.Errorf("network namespaces left: %v", netns)
		}
	})

	// The sandbox image was imported, never pulled (there is no registry).
	if log, _ := os.ReadFile(c.log.Name()); bytes.Contains(log, []byte("PullImage")) {
		t.Errorf("the CRI pulled an image:\n%s", c.logTail())
	}
}
