package agent

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// ping checks that the agent still answers.
func (h *harness) ping(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := h.client.Ping(ctx, &api.PingRequest{Payload: []byte("alive")})
	if err != nil || string(r.Payload) != "alive" {
		t.Fatalf("agent stopped answering: %v", err)
	}
}

func TestMissingBinary(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"absolute path", []string{"/bin/nope"}, []string{"/bin/nope", "executable not found", "no such file"}},
		{"PATH lookup", []string{"nope-either"}, []string{"nope-either", "not found in $PATH"}},
		{"not executable", []string{"/etc/hostname"}, []string{"/etc/hostname", "not an executable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			err := h.create(ctx, "missing", testSpec(tc.args...), false)
			wantCode(t, err, codes.FailedPrecondition, tc.want...)
			h.ping(t)
		})
	}
	// The id was released: the same container can now be created.
	if _, st := h.run("missing", testSpec("true")); st.ExitStatus != 0 {
		t.Errorf("status %d", st.ExitStatus)
	}
	// Exec of a missing binary fails the same way; the container runs on.
	h.startSleeper("c")
	_, err := h.exec(ctx, "c", "x", &specs.Process{Args: []string{"/usr/bin/nope"}}, false)
	wantCode(t, err, codes.FailedPrecondition, "/usr/bin/nope", "executable not found")
	out, err := h.exec(ctx, "c", "x", &specs.Process{Args: []string{"echo", "still here"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	h.wait(ctx, "c", "x")
	out.wait(t)
	if out.stdout.String() != "still here\n" {
		t.Errorf("stdout %q", out.stdout.String())
	}
}

func TestMalformedRequests(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	good := mustJSON(t, testSpec("true"))
	tests := []struct {
		name string
		req  *api.CreateContainerRequest
		code codes.Code
		want string
	}{
		{"spec not JSON", &api.CreateContainerRequest{ContainerId: "a", OciSpec: []byte("{nope"), Rootfs: &api.Rootfs{Source: testRootfs}}, codes.InvalidArgument, "oci_spec"},
		{"no spec", &api.CreateContainerRequest{ContainerId: "a", Rootfs: &api.Rootfs{Source: testRootfs}}, codes.InvalidArgument, "oci_spec is empty"},
		{"no rootfs", &api.CreateContainerRequest{ContainerId: "a", OciSpec: good}, codes.InvalidArgument, "rootfs"},
		{"bad id", &api.CreateContainerRequest{ContainerId: "../etc", OciSpec: good, Rootfs: &api.Rootfs{Source: testRootfs}}, codes.InvalidArgument, "id"},
		{"empty args", &api.CreateContainerRequest{ContainerId: "a", OciSpec: mustJSON(t, testSpec()), Rootfs: &api.Rootfs{Source: testRootfs}}, codes.InvalidArgument, "args"},
		{"bad rlimit", &api.CreateContainerRequest{ContainerId: "a", OciSpec: mustJSON(t, func() *specs.Spec {
			s := testSpec("true")
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}}
			return s
		}()), Rootfs: &api.Rootfs{Source: testRootfs}}, codes.InvalidArgument, "RLIMIT_BOGUS"},
		{"rootfs missing", &api.CreateContainerRequest{ContainerId: "a", OciSpec: good, Rootfs: &api.Rootfs{Source: "/nonexistent/rootfs"}}, codes.Internal, "/nonexistent/rootfs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			_, err := h.client.CreateContainer(ctx, tc.req)
			wantCode(t, err, tc.code, tc.want)
			h.ping(t)
		})
	}
	t.Run("unknown container", func(t *testing.T) {
		_, err := h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: "ghost"}})
		wantCode(t, err, codes.NotFound, "ghost")
	})
	t.Run("no process ref", func(t *testing.T) {
		_, err := h.client.ReadStdout(ctx, &api.ReadStreamRequest{})
		wantCode(t, err, codes.InvalidArgument)
	})
	t.Run("unknown method", func(t *testing.T) {
		err := h.raw.Call(ctx, "ember.agent.v1.Agent", "Teleport", &api.PingRequest{}, &api.PingResponse{})
		wantCode(t, err, codes.Unimplemented)
		h.ping(t)
	})
	t.Run("undecodable payload", func(t *testing.T) {
		// Hand-built ttrpc frame whose payload is not a protobuf message.
		conn, err := net.Dial("unix", h.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req, err := proto.Marshal(&ttrpc.Request{Service: "ember.agent.v1.Agent", Method: "Ping", Payload: []byte{0xff, 0xff, 0xff, 0xff}})
		if err != nil {
			t.Fatal(err)
		}
		var hdr [10]byte // length, stream id, type (1: request), flags
		binary.BigEndian.PutUint32(hdr[0:], uint32(len(req)))
		binary.BigEndian.PutUint32(hdr[4:], 1)
		hdr[8] = 1
		if _, err := conn.Write(append(hdr[:], req...)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			t.Fatal(err)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[0:]))
		if _, err := io.ReadFull(conn, body); err != nil {
			t.Fatal(err)
		}
		var resp ttrpc.Response
		if err := proto.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		if codes.Code(resp.Status.GetCode()) != codes.InvalidArgument {
			t.Errorf("status %v, want InvalidArgument", resp.Status)
		}
		h.ping(t)
	})
}

func TestConcurrentCallsOnOneConnection(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	h.startSleeper("busy")
	// A blocking wait and a blocking read are in flight ...
	waited := make(chan error, 1)
	go func() {
		_, err := h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: "busy"}})
		waited <- err
	}()
	go func() {
		_, _ = h.client.ReadStdout(ctx, &api.ReadStreamRequest{Process: &api.ProcessRef{ContainerId: "busy"}})
	}()
	// ... while other calls on the same connection are answered.
	for i := 0; i < 50; i++ {
		h.ping(t)
	}
	select {
	case err := <-waited:
		t.Fatalf("wait returned early: %v", err)
	default:
	}
	if _, err := h.client.SignalProcess(ctx, &api.SignalProcessRequest{Process: &api.ProcessRef{ContainerId: "busy"}, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
}
