// Package stdio opens the host ends of a container process's standard
// streams as containerd hands them to a shim: fifo paths (ctr, CRI),
// file:// URIs (stdout and stderr appended to one file) and binary://
// URIs (a logging program that reads stdout on fd 3 and stderr on fd 4 and
// closes fd 5 when ready).
package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"
)

// ErrURI is a stdio URI the shim does not understand.
var ErrURI = errors.New("stdio: unsupported URI")

// Paths are containerd's names for a process's streams ("" = none).
type Paths struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// Streams are the opened host ends.
type Streams struct {
	// Stdin is nil when the process has no stdin.
	Stdin io.ReadCloser
	// Stdout and Stderr are nil when not wanted (Stderr is nil for a
	// terminal, whose output all goes to Stdout).
	Stdout, Stderr io.WriteCloser

	mu      sync.Mutex
	closers []io.Closer
	logger  *exec.Cmd
}

// Open opens the streams of process id of container cid in namespace ns.
func Open(ctx context.Context, ns, cid string, p Paths) (_ *Streams, err error) {
	s := &Streams{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if p.Stdin != "" {
		f, err := fifo.OpenFifo(ctx, p.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("stdio: stdin %s: %w", p.Stdin, err)
		}
		s.Stdin = f
	}
	stderr := p.Stderr
	if p.Terminal {
		stderr = ""
	}
	if p.Stdout == "" && stderr == "" {
		return s, nil
	}
	u, err := url.Parse(p.Stdout)
	if err != nil || p.Stdout == "" {
		u = &url.URL{Path: p.Stdout}
	}
	switch u.Scheme {
	case "", "fifo":
		if p.Stdout != "" {
			if s.Stdout, err = openFifo(ctx, u.Path); err != nil {
				return nil, err
			}
		}
		if stderr != "" {
			if s.Stderr, err = openFifo(ctx, stderr); err != nil {
				return nil, err
			}
		}
	case "file":
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return nil, fmt.Errorf("stdio: %w", err)
		}
		f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("stdio: %w", err)
		}
		s.closers = append(s.closers, f)
		// Both streams go to the one file; each writer is closed by its
		// pump, the file when both are done.
		s.Stdout = nopCloser{&lockedWriter{w: f}}
		if !p.Terminal {
			s.Stderr = s.Stdout
		}
	case "binary":
		if err := s.startLogger(ctx, ns, cid, u, p.Terminal); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: %q", ErrURI, p.Stdout)
	}
	return s, nil
}

func openFifo(ctx context.Context, path string) (io.WriteCloser, error) {
	f, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("stdio: %s: %w", path, err)
	}
	return f, nil
}

// startLogger runs a binary:// logging program.
func (s *Streams) startLogger(ctx context.Context, ns, cid string, u *url.URL, terminal bool) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return err
	}
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+cid, "CONTAINER_NAMESPACE="+ns)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		readyR.Close()
		return fmt.Errorf("stdio: logging binary %s: %w", u.Path, err)
	}
	s.logger = cmd
	// The logger closes fd 5 (or exits) when it is ready.
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, readyR)
		readyR.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		outW.Close()
		errW.Close()
		return fmt.Errorf("stdio: logging binary %s not ready: %w", u.Path, ctx.Err())
	}
	s.Stdout = outW
	if terminal {
		errW.Close()
	} else {
		s.Stderr = errW
	}
	return nil
}

// Close closes everything still open and waits (briefly) for a logging
// binary to exit.
func (s *Streams) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Stdin != nil {
		s.Stdin.Close()
	}
	if s.Stdout != nil {
		s.Stdout.Close()
	}
	if s.Stderr != nil {
		s.Stderr.Close()
	}
	for _, c := range s.closers {
		c.Close()
	}
	s.closers = nil
	if s.logger != nil {
		done := make(chan struct{})
		go func() { s.logger.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.logger.Process.Kill()
			<-done
		}
		s.logger = nil
	}
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
