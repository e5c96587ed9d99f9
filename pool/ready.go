package pool

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The ready directory lists the ready VMMs for direct claims: a claimer
// (Client) claims a ready VMM itself, without the daemon in the claim's
// path. Each ready VMM has a bound SOCK_DGRAM socket (ember vmm
// --claim-fd), listed in its profile's directory under a slot number;
// the daemon keeps the slots dense, so that the ready VMMs of a profile
// are 0, 1, ... N-1:
//
//	READY_DIR/PROFILE/N      ready VMM number N's direct-claim socket
//	READY_DIR/PROFILE/.s-ID  a starting VMM's, before it is listed
//
// A claimer sends its claim to slot 0, 1, ... until a VMM answers; a slot
// that does not exist ends the list (the claimer then claims through the
// daemon, which starts a VMM cold if none is ready). A VMM takes the
// first claim it gets, on its socket or from the daemon on its lease,
// and closes the socket: claims sent there too are dropped (their
// claimers see the sockets they passed close, and try the next slot), a
// later send is refused. So no VM is handed out twice, and claimers need
// neither a lock nor the daemon. The VMM tells the daemon of a direct
// claim on its lease (api.LeaseAnswer.Direct); the daemon then counts it,
// moves the last slot's VMM into the freed slot and refills.
//
// Claimer and daemon must be the same user: the directories are 0700.

// ReadyDir is the ready directory of the pool daemon serving socket:
// where `ember pool serve` lists its ready VMMs and where a Client for
// socket looks for them.
func ReadyDir(socket string) string { return socket + ".ready" }

// startingPrefix names a VMM's direct-claim socket before it is listed.
const startingPrefix = ".s-"

// maxSlots bounds the slots a claimer tries.
const maxSlots = 4096

// readyDirName returns the directory name of profile in the ready
// directory, or false if the name cannot be one (such a profile has no
// direct claims).
func readyDirName(profile string) (string, bool) {
	if profile == "" || profile[0] == '.' || len(profile) > 128 || !nameChars(profile) {
		return "", false
	}
	return profile, true
}

// slotPath is the path of slot n in dir.
func slotPath(dir string, n int) string { return filepath.Join(dir, strconv.Itoa(n)) }

// profileReadyDir returns ps's directory in the ready directory, "" if it
// has none.
func (m *Manager) profileReadyDir(ps *profileState) string {
	name, ok := readyDirName(ps.Name)
	if m.cfg.ReadyDir == "" || !ok {
		return ""
	}
	return filepath.Join(m.cfg.ReadyDir, name)
}

// makeReadyDirs creates the ready directory and a fresh directory per
// profile (leftovers of an earlier daemon are removed).
func (m *Manager) makeReadyDirs() error {
	if m.cfg.ReadyDir == "" {
		return nil
	}
	if err := os.MkdirAll(m.cfg.ReadyDir, 0o700); err != nil {
		return fmt.Errorf("pool: ready directory: %w", err)
	}
	if err := os.Chmod(m.cfg.ReadyDir, 0o700); err != nil {
		return fmt.Errorf("pool: ready directory: %w", err)
	}
	for _, ps := range m.profiles {
		if dir := m.profileReadyDir(ps); dir != "" {
			os.RemoveAll(dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				return fmt.Errorf("pool: ready directory: %w", err)
			}
		}
	}
	return nil
}

// removeReadyDirs removes the ready directory (Close).
func (m *Manager) removeReadyDirs() {
	if m.cfg.ReadyDir != "" {
		os.RemoveAll(m.cfg.ReadyDir)
	}
}

// bindDirect makes a VMM's direct-claim socket in dir, under its starting
// name, and returns it for the VMM to inherit.
func bindDirect(dir, id string) (*os.File, string, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("pool: direct-claim socket: %w", err)
	}
	path := filepath.Join(dir, startingPrefix+id)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("pool: direct-claim socket: %w", err)
	}
	return os.NewFile(uintptr(fd), path), path, nil
}

// list gives a ready VMM the next slot. Called with m.mu.
func (m *Manager) list(ps *profileState, e *entry) error {
	if e.direct == "" {
		return nil
	}
	n := len(ps.slots)
	if err := os.Rename(e.direct, slotPath(filepath.Dir(e.direct), n)); err != nil {
		return fmt.Errorf("pool: list ready VMM %s: %w", e.id, err)
	}
	e.direct, e.slot = "", n
	ps.slots = append(ps.slots, e)
	return nil
}

// unlist frees e's slot (e was claimed, or died): the last slot's VMM
// moves into it, so that the slots stay dense. Called with m.mu.
func (m *Manager) unlist(ps *profileState, e *entry) {
	i := e.slot
	if i < 0 || i >= len(ps.slots) || ps.slots[i] != e {
		return
	}
	e.slot = -1
	dir := m.profileReadyDir(ps)
	last := len(ps.slots) - 1
	if i == last {
		os.Remove(slotPath(dir, i))
	} else {
		// (A claim sent to the last slot meanwhile reaches the same VMM.)
		if err := os.Rename(slotPath(dir, last), slotPath(dir, i)); err != nil {
			m.log.Warn("pool: moving a ready VMM's slot", "profile", ps.Name, "err", err)
		}
		ps.slots[i] = ps.slots[last]
		ps.slots[i].slot = i
	}
	ps.slots[last] = nil
	ps.slots = ps.slots[:last]
}
