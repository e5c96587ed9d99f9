package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/memory"
)

// File names inside a snapshot directory.
const (
	StateFile      = "state"
	WorkingSetFile = "workingset"
)

// beforeStateHook, when set (by tests), runs between committing the memory
// file and writing the state file.
var beforeStateHook func() error

// maxWrite bounds one write to the memory file.
const maxWrite = 8 << 20

// SaveOptions tune Save.
type SaveOptions struct {
	// Diff writes only the pages the guest wrote since the previous
	// snapshot (the machine needs vmm.Config.DirtyLog); Parent must name
	// that snapshot.
	Diff   bool
	Parent ID
	// Devices are the device models' states, stored as opaque blobs.
	Devices []DeviceState
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// SaveStats says what Save wrote.
type SaveStats struct {
	PagesWritten uint64 // non-zero pages written to the memory file
	PagesSkipped uint64 // zero pages left as holes
	Elapsed      time.Duration
}

// Save writes a snapshot of m, which must be paused, into dir (created if
// needed). A full save also resets the machine's dirty log, so that a later
// diff holds the pages written after this snapshot.
//
// The save is atomic: the memory file gets a new name, the state file is
// replaced by rename last, and the previous snapshot's memory file is
// deleted only after that. A crash or an error leaves the previous snapshot
// in dir intact and no partial files behind.
func Save(ctx context.Context, m *vmm.Machine, dir string, opts SaveOptions) (*State, *SaveStats, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	if opts.Diff && opts.Parent.IsZero() {
		return nil, nil, fmt.Errorf("%w: a diff needs its parent's ID", ErrDiff)
	}
	ms, err := m.SaveState(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	dirty, err := m.DirtyPages()
	switch {
	case err == nil:
	case opts.Diff:
		return nil, nil, fmt.Errorf("%w: %w", ErrNoDirtyLog, err)
	case errors.Is(err, vmm.ErrBadConfig):
		dirty = nil // no dirty log: nothing to reset
	default:
		return nil, nil, fmt.Errorf("snapshot: reading dirty log: %w", err)
	}
	cpu := cpuInfoFrom(ms.CPUs[0].CPUID)
	st := &State{
		ID: NewID(), Kind: KindFull, Created: time.Now(),
		CPU: cpu, Machine: ms, Devices: opts.Devices,
	}
	if opts.Diff {
		st.Kind, st.Parent = KindDiff, opts.Parent
	}
	st.MemoryFile = "memory-" + st.ID.String() + ".raw"
	regions := m.Memory().Regions()
	var off uint64
	for _, r := range regions {
		st.Regions = append(st.Regions, RegionLayout{GPA: r.GPA(), Size: r.Size(), FileOffset: off})
		off += r.Size()
	}
	if opts.Diff {
		st.Dirty = dirtyExtents(st.Regions, dirty)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	stats := &SaveStats{}
	err = writeAtomic(dir, st.MemoryFile, func(f *os.File) error {
		if err := f.Truncate(int64(off)); err != nil {
			return fmt.Errorf("snapshot: sizing memory file: %w", err)
		}
		w := &pageWriter{ctx: ctx, f: f, stats: stats}
		for i, r := range regions {
			lay := st.Regions[i]
			if !opts.Diff {
				if err := w.write(r.Host(), lay.FileOffset); err != nil {
					return err
				}
				continue
			}
			for _, x := range st.Dirty {
				if x.Offset < lay.FileOffset || x.Offset >= lay.FileOffset+lay.Size {
					continue
				}
				o := x.Offset - lay.FileOffset
				if err := w.write(r.Host()[o:o+x.Length], x.Offset); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if beforeStateHook != nil {
		if err := beforeStateHook(); err != nil {
			os.Remove(filepath.Join(dir, st.MemoryFile))
			return nil, nil, err
		}
	}
	if err := writeState(dir, st); err != nil {
		os.Remove(filepath.Join(dir, st.MemoryFile))
		return nil, nil, err
	}
	if err := removeStale(dir, st.MemoryFile); err != nil {
		log.Warn("removing the previous snapshot's files", "dir", dir, "err", err)
	}
	if err := os.Remove(filepath.Join(dir, WorkingSetFile)); err == nil {
		log.Debug("removed the previous snapshot's working set", "dir", dir)
	}
	stats.Elapsed = time.Since(start)
	log.Info("snapshot saved", "dir", dir, "id", st.ID, "kind", st.Kind,
		"pages_written", stats.PagesWritten, "zero_pages_skipped", stats.PagesSkipped, "elapsed", stats.Elapsed)
	return st, stats, nil
}

// writeState encodes st and replaces dir's state file with it.
func writeState(dir string, st *State) error {
	b, err := st.MarshalBinary()
	if err != nil {
		return err
	}
	return writeAtomic(dir, StateFile, func(f *os.File) error {
		if _, err := f.Write(b); err != nil {
			return fmt.Errorf("snapshot: writing state: %w", err)
		}
		return nil
	})
}

// dirtyExtents turns per-region dirty bitmaps into coalesced memory-file
// extents.
func dirtyExtents(layout []RegionLayout, dirty []memory.Bitmap) []Extent {
	var out []Extent
	for i, b := range dirty {
		if i >= len(layout) {
			break
		}
		base := layout[i].FileOffset
		pages := layout[i].Size / pageSize
		b.Pages(func(p uint64) {
			if p >= pages {
				return
			}
			off := base + p*pageSize
			if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == off {
				out[n-1].Length += pageSize
				return
			}
			out = append(out, Extent{Offset: off, Length: pageSize})
		})
	}
	return out
}

// pageWriter writes the non-zero pages of guest memory to a sparse file,
// coalescing runs of them into large writes.
type pageWriter struct {
	ctx   context.Context
	f     *os.File
	stats *SaveStats
}

var zeroPage [pageSize]byte

// write writes host (whole pages) at file offset off, skipping zero pages.
func (w *pageWriter) write(host []byte, off uint64) error {
	runStart := -1
	flush := func(end int) error {
		if runStart < 0 {
			return nil
		}
		for s := runStart; s < end; s += maxWrite {
			e := min(end, s+maxWrite)
			if _, err := w.f.WriteAt(host[s:e], int64(off)+int64(s)); err != nil {
				return fmt.Errorf("snapshot: writing memory file: %w", err)
			}
		}
		runStart = -1
		return nil
	}
	for p := 0; p < len(host); p += pageSize {
		if p%(64<<20) == 0 && w.ctx.Err() != nil {
			return w.ctx.Err()
		}
		if p%maxWrite == 0 {
			// Fault the next chunk in with a system call before Go code
			// reads it: memory served by a userfaultfd handler in this
			// process (a restored VM) must never fault in Go code (see
			// Memory.Accessor). For other memory this is the fault-in the
			// reads below would do anyway. EINVAL: a kernel before 5.14.
			chunk := host[p:min(len(host), p+maxWrite)]
			if err := unix.Madvise(chunk, unix.MADV_POPULATE_READ); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("snapshot: faulting in guest memory: %w", err)
			}
		}
		if bytes.Equal(host[p:p+pageSize], zeroPage[:]) {
			w.stats.PagesSkipped++
			if err := flush(p); err != nil {
				return err
			}
			continue
		}
		w.stats.PagesWritten++
		if runStart < 0 {
			runStart = p
		}
	}
	return flush(len(host))
}
