package shim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/ociimage"
)

// podNetNS creates a named network namespace, as the CRI plugin does for
// a pod sandbox, and removes it when the test ends.
func podNetNS(t *testing.T, name string) string {
	t.Helper()
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("/run/netns", name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	}()
	if err := <-done; err != nil {
		os.Remove(path)
		t.Fatalf("network namespace %s: %v", path, err)
	}
	t.Cleanup(func() {
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
	})
	return path
}

// cni runs the bridge plugin (with host-local addresses) for the namespace,
// as the CRI plugin would, and returns its result.
func cni(t *testing.T, command, nsPath, dataDir string) []byte {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ember-e2e","type":"bridge","bridge":"ember-br0",
"isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.7.0/24"}]],
"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}`, dataDir)
	cmd := exec.Command(filepath.Join(cniBinDir, "bridge"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID=ember-e2e-pod", "CNI_NETNS="+nsPath,
		"CNI_IFNAME=eth0", "CNI_PATH="+cniBinDir)
	cmd.Stdin = strings.NewReader(conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("CNI %s: %v\n%s%s", command, err, out.Bytes(), errb.Bytes())
	}
	return out.Bytes()
}

// TestNativeShimNetwork: a pod whose network namespace CNI set up (the
// CRI flow, here with ctr --with-ns): the VM's guest takes over the CNI
// interface's address and routes, reaches the bridge's gateway, and is
// reached from the host side; after the container nothing is left in the
// namespace but CNI's own interface.
func TestNativeShimNetwork(t *testing.T) {
	e := startContainerd(t)
	img, err := ociimage.Busybox("/bin/busybox", imageName)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.ctrIn(string(img), "images", "import", "-"); err != nil || r.code != 0 {
		t.Fatalf("ctr images import: %v %+v", err, r)
	}
	ns := podNetNS(t, "ember-e2e-pod")
	data := t.TempDir()
	res := cni(t, "ADD", ns, data)
	t.Cleanup(func() { cni(t, "DEL", ns, data) })
	var result struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(res, &result); err != nil || len(result.IPs) != 1 {
		t.Fatalf("CNI result %s: %v", res, err)
	}
	addr, gw := result.IPs[0].Address, result.IPs[0].Gateway
	ip, _, _ := strings.Cut(addr, "/")
	t.Logf("CNI gave the pod %s, gateway %s", addr, gw)

	withNS := []string{"--rm", "--with-ns", "network:" + ns}
	t.Run("GuestSide", func(t *testing.T) {
		r := e.must(0, e.run("net1", withNS, "sh", "-c",
			"ip -4 addr show; ip route; ping -c 1 -W 20 "+gw)...)
		for _, want := range []string{"inet " + addr, "default via " + gw, "1 packets received"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("container output lacks %q:\n%s\n%s", want, r.stdout, r.stderr)
			}
		}
		t.Logf("ctr run with a CNI network: %v", r.took.Round(time.Millisecond))
	})
	t.Run("HostSide", func(t *testing.T) {
		// The bridge side (L1's root namespace here) pings the guest.
		e.must(0, append([]string{"run", "-d", "--runtime", runtimeName, "--with-ns", "network:" + ns}, imageName, "net2", "sleep", "120")...)
		defer func() {
			e.ctr("task", "kill", "-s", "KILL", "net2")
			for i := 0; i < 50; i++ {
				if r, _ := e.ctr("task", "rm", "net2"); r.code == 0 {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			e.ctr("container", "rm", "net2")
		}()
		var out []byte
		var err error
		for i := 0; i < 5; i++ {
			if out, err = exec.Command("ping", "-c", "1", "-W", "10", ip).CombinedOutput(); err == nil {
				break
			}
		}
		if err != nil {
			t.Errorf("ping %s from the bridge side: %v\n%s", ip, err, out)
		}
	})
	t.Run("NothingLeft", func(t *testing.T) {
		h, err := netns.GetFromPath(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		deadline := time.Now().Add(30 * time.Second)
		for {
			links, _ := nl.LinkList()
			var names []string
			for _, l := range links {
				names = append(names, l.Attrs().Name)
			}
			eth0, err := nl.LinkByName("eth0")
			if err != nil {
				t.Fatalf("CNI's eth0 is gone: %v (links %v)", err, names)
			}
			qs, _ := nl.QdiscList(eth0)
			ingress := false
			for _, q := range qs {
				ingress = ingress || q.Type() == "ingress"
			}
			if len(links) == 2 && !ingress {
				return // lo and eth0
			}
			if time.Now().After(deadline) {
				t.Fatalf("namespace after the containers: links %v, ingress qdisc on eth0 %v", names, ingress)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}
