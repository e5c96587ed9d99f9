package sysinit

// Boot-time markers (see vmm/devices/bootmarker): PID 1 writes a byte to
// an I/O port and the VMM records when it arrived, giving time-to-init and
// time-to-agent-ready without parsing the console.
const (
	// BootMarkerPort is the VMM's boot marker port.
	BootMarkerPort = 0x3f0
	// MarkInit: PID 1 started.
	MarkInit = 123
	// MarkReady: the agent listens.
	MarkReady = 124
)
