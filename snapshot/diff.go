package snapshot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Merge applies the diff snapshot in diffDir onto the full snapshot in
// baseDir and writes the result, a full snapshot with the diff's ID and
// state, to outDir (which may be baseDir: the merge then replaces it
// atomically). The diff's parent must be the base.
func Merge(ctx context.Context, baseDir, diffDir, outDir string) (*State, error) {
	base, err := Open(baseDir)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	diff, err := Open(diffDir)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	b, d := base.State, diff.State
	switch {
	case b.Kind != KindFull:
		return nil, fmt.Errorf("%w: base %s is itself a diff; merge it first", ErrDiff, b.ID)
	case d.Kind != KindDiff:
		return nil, fmt.Errorf("%w: %s is a full snapshot, not a diff", ErrDiff, d.ID)
	case d.Parent != b.ID:
		return nil, fmt.Errorf("%w: diff %s applies to %s, base is %s", ErrDiff, d.ID, d.Parent, b.ID)
	case !sameLayout(b.Regions, d.Regions):
		return nil, fmt.Errorf("%w: base and diff have different memory layouts", ErrMismatch)
	}
	out := *d
	out.Kind, out.Parent, out.Dirty = KindFull, ID{}, nil
	out.MemoryFile = "memory-" + out.ID.String() + ".raw"
	if out.MemoryFile == b.MemoryFile && filepath.Clean(outDir) == filepath.Clean(baseDir) {
		return nil, fmt.Errorf("%w: base already has the diff's ID", ErrDiff)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	size := int64(b.MemorySize())
	err = writeAtomic(outDir, out.MemoryFile, func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		bf, err := os.Open(base.MemoryPath())
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		defer bf.Close()
		df, err := os.Open(diff.MemoryPath())
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		defer df.Close()
		c := &copier{ctx: ctx, dst: f, buf: make([]byte, maxWrite)}
		baseData, err := dataExtents(bf, size)
		if err != nil {
			return err
		}
		for _, x := range baseData {
			if err := c.copy(bf, x); err != nil {
				return err
			}
		}
		diffData, err := dataBitmap(df, size)
		if err != nil {
			return err
		}
		for _, x := range d.Dirty {
			// Within each dirty extent, data pages come from the diff and
			// holes are zero pages: punch them out of the base's content.
			for _, run := range splitRuns(diffData, x) {
				if run.data {
					err = c.copy(df, run.Extent)
				} else {
					err = punch(f, run.Extent)
				}
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := writeState(outDir, &out); err != nil {
		os.Remove(filepath.Join(outDir, out.MemoryFile))
		return nil, err
	}
	if err := removeStale(outDir, out.MemoryFile); err != nil {
		slog.Warn("removing stale snapshot files", "dir", outDir, "err", err)
	}
	os.Remove(filepath.Join(outDir, WorkingSetFile))
	return &out, nil
}

func sameLayout(a, b []RegionLayout) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// run is a part of an extent that is all data or all hole.
type run struct {
	Extent
	data bool
}

// splitRuns splits x into maximal runs of data pages and hole pages.
func splitRuns(data interface{ Test(uint64) bool }, x Extent) []run {
	var out []run
	for off := x.Offset; off < x.Offset+x.Length; off += pageSize {
		isData := data.Test(off / pageSize)
		if n := len(out); n > 0 && out[n-1].data == isData {
			out[n-1].Length += pageSize
			continue
		}
		out = append(out, run{Extent: Extent{Offset: off, Length: pageSize}, data: isData})
	}
	return out
}

// copier copies file ranges at equal offsets through one buffer.
type copier struct {
	ctx context.Context
	dst *os.File
	buf []byte
}

func (c *copier) copy(src *os.File, x Extent) error {
	for off, end := x.Offset, x.Offset+x.Length; off < end; {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n := min(uint64(len(c.buf)), end-off)
		if _, err := src.ReadAt(c.buf[:n], int64(off)); err != nil {
			return fmt.Errorf("snapshot: reading %s at %#x: %w", src.Name(), off, err)
		}
		if _, err := c.dst.WriteAt(c.buf[:n], int64(off)); err != nil {
			return fmt.Errorf("snapshot: writing %s at %#x: %w", c.dst.Name(), off, err)
		}
		off += n
	}
	return nil
}

// punch turns x into a hole (reads as zeros) without changing the size.
func punch(f *os.File, x Extent) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(x.Offset), int64(x.Length))
	if err == nil {
		return nil
	}
	// No hole punching here: write zeros instead.
	zero := make([]byte, min(x.Length, maxWrite))
	for off, end := x.Offset, x.Offset+x.Length; off < end; {
		n := min(uint64(len(zero)), end-off)
		if _, err := f.WriteAt(zero[:n], int64(off)); err != nil {
			return fmt.Errorf("snapshot: zeroing %s at %#x: %w", f.Name(), off, err)
		}
		off += n
	}
	return nil
}
