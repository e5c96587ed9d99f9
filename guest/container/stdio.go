package container

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// stdio is the agent's side of a process's standard streams.
type stdio struct {
	terminal bool
	master   *os.File // terminal master, or nil

	inMu   sync.Mutex
	stdin  *os.File // write end (the master for a terminal), nil once closed
	stdout *outStream
	stderr *outStream

	child [3]*os.File // the process's ends, closed once it started
}

// newStdio makes pipes (or a terminal) for a process. Without wantStdin the
// process reads /dev/null.
func newStdio(wantStdin, terminal bool, size *specs.Box) (_ *stdio, err error) {
	s := &stdio{terminal: terminal}
	defer func() {
		if err != nil {
			s.closeChild()
			s.close()
		}
	}()
	if terminal {
		master, slave, err := openPty()
		if err != nil {
			return nil, err
		}
		s.master = master
		s.child = [3]*os.File{slave, slave, slave}
		if size != nil {
			if err := resizePty(master, uint16(size.Height), uint16(size.Width)); err != nil {
				return nil, err
			}
		}
		if wantStdin {
			s.stdin = master
		}
		s.stdout = newOutStream(master)
		s.stderr = newOutStream(nil)
		return s, nil
	}
	if wantStdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		s.child[0], s.stdin = r, w
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		s.child[0] = null
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	s.child[1] = outW
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	s.child[2] = errW
	s.stdout = newOutStream(outR)
	s.stderr = newOutStream(errR)
	return s, nil
}

// childFds returns the fds for the child, in blocking mode (Fd does that):
// a process must not get non-blocking stdio.
func (s *stdio) childFds() []uintptr {
	return []uintptr{s.child[0].Fd(), s.child[1].Fd(), s.child[2].Fd()}
}

// closeChild closes the process's ends in the agent (after the start, or
// on failure), so that EOF comes when the process's copies close.
func (s *stdio) closeChild() {
	seen := map[*os.File]bool{}
	for _, f := range s.child {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
	s.child = [3]*os.File{}
}

// writeStdin writes all of data, blocking while the pipe is full.
func (s *stdio) writeStdin(ctx context.Context, data []byte) (int, error) {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.stdin == nil {
		return 0, ErrNoStdin
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.stdin.SetWriteDeadline(time.Unix(1, 0))
	})
	n, err := s.stdin.Write(data)
	if !stop() {
		// ctx ended: the deadline may be set; clear it for the next call.
		_ = s.stdin.SetWriteDeadline(time.Time{})
		if err != nil {
			return n, fmt.Errorf("write stdin: %w", ctx.Err())
		}
	}
	if err != nil {
		return n, fmt.Errorf("write stdin: %w", err)
	}
	return n, nil
}

// closeStdin closes stdin: the process reads EOF. On a terminal it sends
// the EOF character (^D) instead, since the master stays open for output.
func (s *stdio) closeStdin() error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.stdin == nil {
		return nil
	}
	if s.terminal {
		_, err := s.stdin.Write([]byte{4})
		s.stdin = nil
		return err
	}
	err := s.stdin.Close()
	s.stdin = nil
	return err
}

func (s *stdio) resize(rows, cols uint16) error {
	if !s.terminal {
		return ErrNoTerminal
	}
	return resizePty(s.master, rows, cols)
}

// close releases everything of the agent's side.
func (s *stdio) close() {
	s.inMu.Lock()
	if s.stdin != nil && !s.terminal {
		s.stdin.Close()
	}
	s.stdin = nil
	s.inMu.Unlock()
	if s.stdout != nil {
		s.stdout.Close()
	}
	if s.stderr != nil {
		s.stderr.Close()
	}
}
