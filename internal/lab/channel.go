package lab

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/embervm/ember/internal/lab/labproto"
)

// report is what the agent told the host over the channel.
type report struct {
	mu        sync.Mutex
	hello     time.Time     // agent up
	started   time.Time     // command about to run
	guestBoot time.Duration // L1 uptime at start
	exited    bool
	code      int
	fail      string    // agent could not start the command
	err       error     // channel broken mid-frame or output writer failed
	last      time.Time // when the last frame arrived
	text      uint64    // L1's kernel _text address, if reported
}

// snapshot returns a copy safe to read without the lock.
func (r *report) snapshot() report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return report{hello: r.hello, started: r.started, guestBoot: r.guestBoot,
		exited: r.exited, code: r.code, fail: r.fail, err: r.err, last: r.last, text: r.text}
}

// readChannel reads the agent's frames from conn until the final (Exit or
// Fail) frame or EOF, writing output to stdout and stderr as it arrives (so
// a slow writer slows the guest, and nothing is dropped). It acknowledges
// the final frame on conn and closes finished.
func readChannel(conn io.ReadWriter, stdout, stderr io.Writer, r *report, finished chan<- struct{}) {
	for {
		typ, payload, err := labproto.ReadFrame(conn)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.mu.Lock()
				r.err = fmt.Errorf("lab: agent channel: %w", err)
				r.mu.Unlock()
			}
			return
		}
		r.mu.Lock()
		r.last = time.Now()
		r.mu.Unlock()
		switch typ {
		case labproto.Heartbeat:
		case labproto.Stdout, labproto.Stderr:
			w := stdout
			if typ == labproto.Stderr {
				w = stderr
			}
			if _, err := w.Write(payload); err != nil {
				r.mu.Lock()
				r.err = fmt.Errorf("lab: write command output: %w", err)
				r.mu.Unlock()
				stdout, stderr = io.Discard, io.Discard
			}
		case labproto.Hello:
			r.mu.Lock()
			r.hello = time.Now()
			r.mu.Unlock()
		case labproto.KernelText:
			text, _ := strconv.ParseUint(string(payload), 16, 64)
			r.mu.Lock()
			r.text = text
			r.mu.Unlock()
		case labproto.Start:
			ns, _ := strconv.ParseInt(string(payload), 10, 64)
			r.mu.Lock()
			r.started, r.guestBoot = time.Now(), time.Duration(ns)
			r.mu.Unlock()
		case labproto.Exit, labproto.Fail:
			r.mu.Lock()
			if typ == labproto.Exit {
				r.exited = true
				r.code, err = strconv.Atoi(string(payload))
				if err != nil {
					r.err = fmt.Errorf("lab: bad exit frame %q", payload)
				}
			} else {
				r.fail = string(payload)
			}
			r.mu.Unlock()
			_, _ = conn.Write([]byte{labproto.Ack})
			close(finished)
			// Nothing follows the final frame; the host kills QEMU now,
			// which may reset the connection.
			return
		}
	}
}
