// Package api is the control API of an ember VMM process: JSON over HTTP on
// a Unix socket, one VMM process (one VM) per socket, in the spirit of
// Firecracker's API. The CLI, the warm pool and the containerd shim are its
// clients.
//
// Endpoints:
//
//	GET  /               instance description (Info)
//	PUT  /actions        {"action": "start"|"pause"|"resume"|"stop"}
//	GET  /wait           blocks until the VM ends; returns its ExitInfo
//	PUT  /identity       re-identify a restored VM (Identity); ?resume=1 also resumes it
//	PUT  /snapshot       write a snapshot of the paused VM (SnapshotRequest)
//	GET  /metrics        counters (Metrics)
//	GET  /drives         the spare drive slots ([]DriveSlot)
//	PUT  /drives/{slot}  attach an image to an empty spare slot (DriveRequest)
//	DELETE /drives/{slot} empty a spare slot
//
// Errors come back as a non-2xx status with {"error": "..."}.
package api

import "time"

// State is the VM's lifecycle state as the API reports it.
type State string

// States.
const (
	StateNotStarted State = "not-started"
	StateRunning    State = "running"
	StatePaused     State = "paused"
	StateStopped    State = "stopped"
)

// Info describes the VMM process and its VM.
type Info struct {
	ID        string `json:"id"`
	PID       int    `json:"pid"`
	State     State  `json:"state"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB uint64 `json:"memory_mib"`
	// Source says how the VM came to be: "boot", "restore:<backend>" or
	// "testguest".
	Source string `json:"source"`
	// Identity is the identity last applied (nil if none).
	Identity *Identity `json:"identity,omitempty"`
}

// Action names.
const (
	ActionStart  = "start"
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionStop   = "stop"
)

// ActionRequest is the body of PUT /actions.
type ActionRequest struct {
	Action string `json:"action"`
}

// ExitInfo is how the VM ended.
type ExitInfo struct {
	// Code is the guest's exit code when it asked to stop (test-guest exit
	// port, power-off), else 0.
	Code int `json:"code"`
	// Error is set when the VM ended on an error (a fatal exit).
	Error string `json:"error,omitempty"`
	// Reason says what ended it.
	Reason string `json:"reason"`
	// Reports are the values a test guest reported.
	Reports []uint64 `json:"reports,omitempty"`
}

// Identity makes a VM distinct after a restore or a pool claim: every field
// is applied once, at claim time, and never shared between two VMs.
type Identity struct {
	// ID names the VM (a container or sandbox id).
	ID string `json:"id"`
	// Nonce is host entropy the guest mixes into its RNG (hex).
	Nonce string `json:"nonce"`
	// Time is the host's wall clock when the identity was issued; the guest
	// steps its clock to it.
	Time time.Time `json:"time"`
	// MAC and IP (CIDR) address the guest's network interface.
	MAC string `json:"mac,omitempty"`
	IP  string `json:"ip,omitempty"`
}

// SnapshotRequest is the body of PUT /snapshot.
type SnapshotRequest struct {
	// Dir is the snapshot directory to write.
	Dir string `json:"dir"`
	// Diff writes only pages dirtied since the last snapshot.
	Diff bool `json:"diff,omitempty"`
}

// DriveRequest is the body of PUT /drives/{slot}.
type DriveRequest struct {
	// Path is the raw image (ext4, ...) the slot reads and writes.
	Path string `json:"path"`
	// ReadOnly opens it read-only: writes fail with an I/O error in the
	// guest, which should mount it read-only.
	ReadOnly bool `json:"read_only,omitempty"`
}

// DriveSlot describes one spare drive slot (GET /drives).
type DriveSlot struct {
	Slot int `json:"slot"`
	// ID is the serial the guest sees (/sys/block/vdX/serial).
	ID string `json:"id"`
	// Path is the attached image; empty for an empty slot.
	Path     string `json:"path,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Sectors is the capacity in 512-byte sectors the guest is told.
	Sectors uint64 `json:"sectors"`
}

// Metrics are the VMM's counters.
type Metrics struct {
	Exits     uint64        `json:"exits"`
	Uptime    time.Duration `json:"uptime_ns"`
	RSSBytes  uint64        `json:"rss_bytes"`
	Restore   *RestoreStats `json:"restore,omitempty"`
	StartedAt time.Time     `json:"started_at"`
	// FirstReportAt is when a test guest first wrote to its report ports,
	// a few instructions after it first ran (zero for other guests, or
	// before that).
	FirstReportAt time.Time `json:"first_report_at,omitzero"`
}

// RestoreStats describe how the VM's memory was restored.
type RestoreStats struct {
	Backend      string        `json:"backend"`
	Duration     time.Duration `json:"duration_ns"`
	Faults       uint64        `json:"faults"`
	BytesRead    uint64        `json:"bytes_read"`
	PagesZeroed  uint64        `json:"pages_zeroed"`
	PagesFetched uint64        `json:"pages_prefetched"`
}

// errorBody is the JSON body of an error response.
type errorBody struct {
	Error string `json:"error"`
}

// LeaseClaim is what a supervisor that pooled a VMM (the warm pool) sends
// on the VMM's lease socket (ember vmm --lease-fd, a SOCK_SEQPACKET
// socket) to hand the VMM over: one message, the claim. Closing the lease
// without one ends the VMM.
type LeaseClaim struct {
	// Identity makes the VM distinct; it is applied before anything runs.
	Identity Identity `json:"identity"`
	// Resume runs the VM at once. Without it the VM stays paused for the
	// claimer, who resumes it through the API.
	Resume bool `json:"resume,omitempty"`
}

// LeaseAnswer is the VMM's one reply to a LeaseClaim, sent once the claim
// has taken effect (with Resume: once the vCPU thread is entering the
// guest and, for a Linux VM, its agent has the identity), or failed. From
// then on the VMM belongs to the claimer.
//
// A VMM with a direct-claim socket (ember vmm --claim-fd) also takes a
// LeaseClaim from a claimer that sends one there (a datagram, passing the
// socket to answer on). It answers that claimer with the handover (PID to
// Console), and then tells its supervisor on the lease with a LeaseAnswer
// that has Direct set (and the claim's Error, if it failed): the VMM is no
// longer the supervisor's.
type LeaseAnswer struct {
	Error string `json:"error,omitempty"`
	// Conflict: the VM could not be claimed in its state.
	Conflict bool `json:"conflict,omitempty"`
	// Direct: on the lease, the VMM was claimed on its direct-claim
	// socket (ID names the claim).
	Direct bool   `json:"direct,omitempty"`
	ID     string `json:"id,omitempty"`
	// The handover, in the answer to a direct claimer: the VMM's pid, its
	// API socket, the VM's vsock socket and console log (if it has them).
	PID     int    `json:"pid,omitempty"`
	Socket  string `json:"socket,omitempty"`
	Vsock   string `json:"vsock,omitempty"`
	Console string `json:"console,omitempty"`
}
