package client

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
)

type pingService struct{ api.AgentService }

func (pingService) Ping(_ context.Context, r *api.PingRequest) (*api.PingResponse, error) {
	return &api.PingResponse{Payload: r.Payload}, nil
}

// fakeVMM plays the VMM's vsock socket: it answers "CONNECT 1024" with
// "OK 1073741824" and serves the agent's Ping behind it; other ports are
// refused (closed) as the device does on RST.
func fakeVMM(t *testing.T, sock string) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	api.RegisterAgentService(srv, pingService{})
	t.Cleanup(func() { srv.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "CONNECT 1024\n" {
					c.Close()
					return
				}
				c.Write([]byte("OK 1073741824\n"))
				l := &oneConnListener{c: make(chan net.Conn, 1)}
				l.c <- c
				go srv.Serve(context.Background(), l)
			}()
		}
	}()
}

// oneConnListener hands one connection to a ttrpc server.
type oneConnListener struct{ c chan net.Conn }

func (l *oneConnListener) Accept() (net.Conn, error) {
	c, ok := <-l.c
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.UnixAddr{} }

func TestDial(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The socket appears later: Dial waits for it.
	go func() {
		time.Sleep(100 * time.Millisecond)
		fakeVMM(t, sock)
	}()
	c, err := Dial(ctx, sock, api.DefaultVsockPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.HostPort != 1<<30 {
		t.Errorf("host port %d", c.HostPort)
	}
	r, err := c.Ping(ctx, &api.PingRequest{Payload: []byte("hi")})
	if err != nil || string(r.Payload) != "hi" {
		t.Fatalf("ping: %v %v", r, err)
	}
}

func TestRefusedPort(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	fakeVMM(t, sock)
	ctx := context.Background()
	if _, _, err := Connect(ctx, sock, 77); !errors.Is(err, ErrHandshake) {
		t.Errorf("Connect to a refused port: %v, want ErrHandshake", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, sock, 77); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrHandshake) {
		t.Errorf("Dial to a refused port: %v, want the deadline and the last handshake error", err)
	}
}
