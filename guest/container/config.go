package container

import specs "github.com/opencontainers/runtime-spec/specs-go"

// The agent and the container-init child (the agent binary re-executed with
// InitArg) talk over a socketpair at fd 3 with JSON messages:
//
//	agent -> init: initConfig
//	init -> agent: initReply{ready} | initReply{error}       (create mode)
//	init -> agent: initReply{started, pid} | initReply{error} (exec mode)
//	agent -> init: initStart                                  (create mode)
//	init -> agent: EOF (exec succeeded: the socket is close-on-exec)
//	             | initReply{error}

// InitArg is argv[1] of a container-init child.
const InitArg = "__ember_container_init__"

// Fixed fds of the init child.
const (
	initSockFd  = 3
	firstExtraF = 4
)

type initMode string

const (
	modeCreate initMode = "create"
	modeExec   initMode = "exec"
)

// initConfig tells the child what to set up.
type initConfig struct {
	Mode initMode `json:"mode"`
	ID   string   `json:"id"`

	// Create mode.
	Spec      *specs.Spec `json:"spec,omitempty"`
	Rootfs    Rootfs      `json:"rootfs"`
	RootfsDir string      `json:"rootfsDir,omitempty"`

	// Exec mode: the process, and the fds of the container's namespaces
	// (ipc, uts, pid, mnt), its root directory and its cgroup.procs (-1
	// if none).
	Process   *specs.Process `json:"process,omitempty"`
	NsFds     []nsFd         `json:"nsFds,omitempty"`
	RootFd    int            `json:"rootFd,omitempty"`
	CgroupFd  int            `json:"cgroupFd,omitempty"`
	HasCgroup bool           `json:"hasCgroup,omitempty"`
	Terminal  bool           `json:"terminal,omitempty"`
}

type nsFd struct {
	Type string `json:"type"` // "ipc", "uts", "pid", "mnt"
	Fd   int    `json:"fd"`
}

type replyType string

const (
	replyReady   replyType = "ready"
	replyStarted replyType = "started"
	replyError   replyType = "error"
)

// initReply is the child's answer.
type initReply struct {
	Type     replyType `json:"type"`
	Pid      int       `json:"pid,omitempty"`
	Error    string    `json:"error,omitempty"`
	NotFound bool      `json:"notFound,omitempty"`
	Setup    bool      `json:"setup,omitempty"`
}

// initStart tells a created container's init to exec.
type initStart struct {
	Start bool `json:"start"`
}
