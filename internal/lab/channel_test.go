package lab

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/embervm/ember/internal/lab/labproto"
)

// fakeConn is a channel end: frames to read, and what the host wrote back.
type fakeConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return c.out.Write(p) }

func frames(t *testing.T, fs ...[2]string) io.Reader {
	t.Helper()
	var b bytes.Buffer
	fw := labproto.NewFrameWriter(&b)
	for _, f := range fs {
		if err := fw.WriteFrame(f[0][0], []byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	return &b
}

func TestReadChannel(t *testing.T) {
	tests := []struct {
		name    string
		in      func(t *testing.T) io.Reader
		stdout  string
		stderr  string
		exited  bool
		code    int
		fail    string
		acked   bool
		started bool
		wantErr bool
	}{
		{
			name: "normal run",
			in: func(t *testing.T) io.Reader {
				return frames(t, [2]string{"H", "1"}, [2]string{"S", "2000000000"}, [2]string{"O", "out1 "},
					[2]string{"E", "err"}, [2]string{"O", "out2"}, [2]string{"X", "7"}, [2]string{"O", "after exit"})
			},
			stdout: "out1 out2", stderr: "err", exited: true, code: 7, acked: true, started: true,
		},
		{
			name: "start failure",
			in:   func(t *testing.T) io.Reader { return frames(t, [2]string{"H", "1"}, [2]string{"F", "no such file"}) },
			fail: "no such file", acked: true,
		},
		{
			name: "L1 died mid-frame",
			in: func(t *testing.T) io.Reader {
				return io.MultiReader(frames(t, [2]string{"S", "1"}), strings.NewReader("O\x00\x00"))
			},
			started: true, wantErr: true,
		},
		{
			name:   "clean EOF without exit",
			in:     func(t *testing.T) io.Reader { return frames(t, [2]string{"O", "partial"}) },
			stdout: "partial",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := &fakeConn{r: tc.in(t)}
			var stdout, stderr bytes.Buffer
			var rep report
			finished := make(chan struct{})
			readChannel(conn, &stdout, &stderr, &rep, finished)
			r := rep.snapshot()
			if stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Errorf("stdout %q stderr %q; want %q %q", &stdout, &stderr, tc.stdout, tc.stderr)
			}
			if r.exited != tc.exited || r.code != tc.code || r.fail != tc.fail {
				t.Errorf("exited %v code %d fail %q; want %v %d %q", r.exited, r.code, r.fail, tc.exited, tc.code, tc.fail)
			}
			if got := conn.out.String() == string(labproto.Ack); got != tc.acked {
				t.Errorf("acked %v, want %v", got, tc.acked)
			}
			select {
			case <-finished:
				if !tc.acked {
					t.Error("finished closed without a final frame")
				}
			default:
				if tc.acked {
					t.Error("finished not closed")
				}
			}
			if !r.started.IsZero() != tc.started {
				t.Errorf("started %v, want %v", !r.started.IsZero(), tc.started)
			}
			if (r.err != nil) != tc.wantErr {
				t.Errorf("err %v, want error %v", r.err, tc.wantErr)
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestReadChannelWriterFails: a failing output writer is reported, and the
// channel is still drained to the exit frame so the guest is not stalled.
func TestReadChannelWriterFails(t *testing.T) {
	conn := &fakeConn{r: frames(t, [2]string{"O", "a"}, [2]string{"O", "b"}, [2]string{"X", "0"})}
	var rep report
	readChannel(conn, failingWriter{}, io.Discard, &rep, make(chan struct{}))
	r := rep.snapshot()
	if r.err == nil || !r.exited {
		t.Fatalf("err %v exited %v; want the writer's error and the exit", r.err, r.exited)
	}
}
