package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/sysinit"
	"github.com/embervm/ember/guest/testrootfs"
)

func TestMain(m *testing.M) {
	container.RunInitIfRequested()
	if os.Getenv("EMBER_AGENT_TEST_MAIN") == "1" {
		// This test binary plays ember-agent.
		os.Args = append([]string{"ember-agent"}, flagArgs()...)
		main()
	}
	os.Exit(m.Run())
}

func flagArgs() []string {
	return strings.Fields(os.Getenv("EMBER_AGENT_TEST_ARGS"))
}

// TestAgentBinary runs the agent as its own process on a Unix socket: the
// ready marker, an RPC, a container (the binary re-executes itself), and a
// clean exit on SIGTERM.
func TestAgentBinary(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := testrootfs.Build(rootfs); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "EMBER_AGENT_TEST_MAIN=1",
		"EMBER_AGENT_TEST_ARGS=-listen unix://"+sock+" -state-dir "+filepath.Join(dir, "state"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), sysinit.ReadyMarker) {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		if line != sysinit.ReadyMarker+" unix://"+sock {
			t.Errorf("ready line %q", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no ready marker")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	client := api.NewAgentClient(ttrpc.NewClient(conn))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := client.Version(ctx, &api.VersionRequest{ClientProtocolVersion: api.ProtocolVersion})
	if err != nil || v.ProtocolVersion != 1 {
		t.Fatalf("version %v %v", v, err)
	}
	spec, _ := json.Marshal(testrootfs.Spec("sh", "-c", "exit 7"))
	if _, err := client.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c", OciSpec: spec, Rootfs: &api.Rootfs{Source: rootfs}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "c"}); err != nil {
		t.Fatal(err)
	}
	st, err := client.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: "c"}})
	if err != nil || st.ExitStatus != 7 {
		t.Fatalf("wait: %v %v", st, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
}
