package container

import (
	"context"
	"fmt"
	"os"
	"sync"
)

// Output streams are pumped from the pipe (or terminal) into a small bounded
// queue. When the host does not read, the queue fills, the pump stops
// reading, the pipe fills and the writing process blocks: back-pressure
// without loss, and with at most streamQueue*streamChunk bytes held here.
const (
	streamChunk = 32 << 10
	streamQueue = 8
)

// outStream is one readable output of a process.
type outStream struct {
	r      *os.File
	chunks chan []byte
	quit   chan struct{}
	lock   chan struct{} // one reader at a time, cancellable
	once   sync.Once
	rest   []byte
	done   bool
}

// newOutStream starts pumping r; a nil r is an already finished stream
// (stderr of a terminal process).
func newOutStream(r *os.File) *outStream {
	s := &outStream{
		chunks: make(chan []byte, streamQueue),
		quit:   make(chan struct{}),
		lock:   make(chan struct{}, 1),
	}
	if r == nil {
		close(s.chunks)
		return s
	}
	s.r = r
	go s.pump(r)
	return s
}

func (s *outStream) pump(r *os.File) {
	defer close(s.chunks)
	defer r.Close()
	for {
		buf := make([]byte, streamChunk)
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case s.chunks <- buf[:n]:
			case <-s.quit:
				return
			}
		}
		if err != nil {
			// EOF on a pipe, EIO on a terminal master once the last slave
			// fd is closed, ErrClosed after Close: all end the stream.
			return
		}
	}
}

// Read returns up to max bytes, blocking until some are there; eof is true
// once everything was read.
func (s *outStream) Read(ctx context.Context, max int) (data []byte, eof bool, err error) {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("read output: %w", ctx.Err())
	}
	defer func() { <-s.lock }()
	if len(s.rest) == 0 && !s.done {
		select {
		case c, ok := <-s.chunks:
			if !ok {
				s.done = true
			} else {
				s.rest = c
			}
		case <-ctx.Done():
			return nil, false, fmt.Errorf("read output: %w", ctx.Err())
		}
	}
	// Top up from chunks already queued, without blocking.
	for len(s.rest) < max && !s.done {
		select {
		case c, ok := <-s.chunks:
			if !ok {
				s.done = true
			} else {
				s.rest = append(s.rest, c...)
			}
			continue
		default:
		}
		break
	}
	n := min(max, len(s.rest))
	data = s.rest[:n:n]
	s.rest = s.rest[n:]
	return data, s.done && len(s.rest) == 0, nil
}

// Close stops the pump (pending output is dropped).
func (s *outStream) Close() {
	s.once.Do(func() {
		close(s.quit)
		if s.r != nil {
			s.r.Close()
		}
	})
}
