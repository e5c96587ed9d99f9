package agent

import (
	"context"
	"fmt"
	"testing"

	"github.com/embervm/ember/guest/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Run: go test -run '^$' -bench . -benchtime 200x ./guest/agent

// BenchmarkPing is one RPC round trip over the agent's Unix socket.
func BenchmarkPing(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	req := &api.PingRequest{Payload: []byte("x")}
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.client.Ping(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkContainerRun is CreateContainer + StartContainer + WaitProcess
// of /bin/true (+ RemoveContainer): the container-process start latency.
func BenchmarkContainerRun(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	spec := mustJSON(b, testSpec("true"))
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("b%d", i)
		i++
		if _, err := h.client.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: id, OciSpec: spec, Rootfs: &api.Rootfs{Source: testRootfs}}); err != nil {
			b.Fatal(err)
		}
		if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: id}}); err != nil {
			b.Fatal(err)
		}
		if _, err := h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: id}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExec is ExecProcess + WaitProcess of /bin/true in a running
// container (+ DeleteProcess).
func BenchmarkExec(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	if err := h.create(ctx, "host", testSpec("sleep", "1000"), false); err != nil {
		b.Fatal(err)
	}
	if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "host"}); err != nil {
		b.Fatal(err)
	}
	proc := mustJSON(b, &specs.Process{Args: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	i := 0
	for b.Loop() {
		ref := &api.ProcessRef{ContainerId: "host", ExecId: fmt.Sprintf("e%d", i)}
		i++
		if _, err := h.client.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "host", ExecId: ref.ExecId, OciProcess: proc}); err != nil {
			b.Fatal(err)
		}
		if _, err := h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: ref}); err != nil {
			b.Fatal(err)
		}
		if _, err := h.client.DeleteProcess(ctx, &api.DeleteProcessRequest{Process: ref}); err != nil {
			b.Fatal(err)
		}
	}
}
