// Package labproto is the wire protocol between the nested lab's host side
// (package lab) and its guest agent (package labguest) running as PID 1 in
// L1.
//
// The agent talks to the host over one virtio-serial port named PortName.
// Every message from the guest is a frame: one type byte, a 4-byte big-endian
// payload length and the payload. One port carries everything, in order, so
// when the host reads the Exit frame it has already read every byte of the
// command's output that preceded it. The host answers the Exit frame with the
// single byte Ack, after which the agent powers L1 off.
package labproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// PortName is the name of the virtio-serial port the agent writes frames to
// (visible in the guest as /sys/class/virtio-ports/*/name).
const PortName = "org.embervm.lab.0"

// SpecPath is where the host places the Spec, as JSON, in L1's initramfs.
const SpecPath = "/ember-lab/spec.json"

// GuestEnv is set to "1" in the environment of the command run in L1, so a
// program can tell it is running inside the lab.
const GuestEnv = "EMBER_LAB_GUEST"

// Frame types sent by the guest agent.
const (
	// Hello: the agent is up and has opened the port. Payload: the guest's
	// CLOCK_BOOTTIME in nanoseconds, decimal.
	Hello byte = 'H'
	// Start: the command is about to be executed. Payload as Hello.
	Start byte = 'S'
	// Stdout and Stderr carry a chunk of the command's output.
	Stdout byte = 'O'
	Stderr byte = 'E'
	// Exit: the command finished. Payload: its exit status, decimal (128+N
	// for death by signal N).
	Exit byte = 'X'
	// Fail: the agent could not run the command. Payload: the reason.
	Fail byte = 'F'
	// Heartbeat: sent every Spec.Heartbeat while the command runs, so the
	// host can tell a frozen L1 (no frames at all) from a quiet command.
	// No payload.
	Heartbeat byte = 'B'
	// KernelText: sent once after Hello. Payload: the address of L1's
	// kernel _text (after KASLR), hexadecimal without 0x, so the host can
	// look up a frozen L1's registers in System.map. Optional.
	KernelText byte = 'K'
)

// Ack is the byte the host writes to the port after it read the Exit or
// Fail frame.
const Ack byte = 'A'

// Nudge is a byte the host writes to the port every second once the agent
// said Hello; the agent reads and drops it. Its only effect is a device
// interrupt in L1 (see lab.Run).
const Nudge byte = 'N'

// MaxPayload bounds a frame's payload; longer writes are split.
const MaxPayload = 64 << 10

// ErrFrameTooLarge means a frame header announced more than MaxPayload bytes,
// which only a corrupt stream can do.
var ErrFrameTooLarge = errors.New("labproto: frame too large")

// Spec is what the host asks the agent to do.
type Spec struct {
	// Args is the command and its arguments; Args[0] is looked up in PATH.
	Args []string `json:"args"`
	// Env is the command's complete environment.
	Env []string `json:"env"`
	// Dir is the command's working directory.
	Dir string `json:"dir"`
	// Modules are the guest paths of kernel modules to load, in order
	// (dependencies first).
	Modules []string `json:"modules"`
	// HostTime is the host's wall clock (Unix nanoseconds) when the run
	// was prepared; L1 has no RTC, so the agent sets its clock from it.
	HostTime int64 `json:"host_time"`
	// Heartbeat is how often the agent sends a Heartbeat frame while the
	// command runs (0: never). Keep it rare: frequent traffic on the port
	// while an L2 guest runs makes QEMU's emulated nested SVM freeze L1
	// more often (2 s froze 2 runs of 2; none without).
	Heartbeat time.Duration `json:"heartbeat"`
}

// FrameWriter writes frames to an io.Writer; it is safe for concurrent use,
// and frames from concurrent callers never interleave.
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter returns a FrameWriter writing to w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes payload as one or more frames of type typ.
func (fw *FrameWriter) WriteFrame(typ byte, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for first := true; first || len(payload) > 0; first = false {
		n := min(len(payload), MaxPayload)
		buf := make([]byte, 5+n)
		buf[0] = typ
		binary.BigEndian.PutUint32(buf[1:5], uint32(n))
		copy(buf[5:], payload[:n])
		if _, err := fw.w.Write(buf); err != nil {
			return fmt.Errorf("labproto: write frame: %w", err)
		}
		payload = payload[n:]
	}
	return nil
}

// Stream returns an io.Writer whose writes become frames of type typ.
func (fw *FrameWriter) Stream(typ byte) io.Writer { return streamWriter{fw, typ} }

type streamWriter struct {
	fw  *FrameWriter
	typ byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.fw.WriteFrame(s.typ, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrame reads one frame from r. It returns io.EOF only at a clean frame
// boundary and io.ErrUnexpectedEOF for a truncated frame.
func ReadFrame(r io.Reader) (typ byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w: type %q, %d bytes", ErrFrameTooLarge, hdr[0], n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], payload, nil
}
