package snapshot

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Working-set file: the memory-file pages a restored guest touched during
// its first run, in the order it first touched them, framed like the state
// file (magic "EMBRWSET") with one "WSET" section:
//
//	snapshot ID [16]byte | pages u64 | count u32 | count × (first page u64, pages u32)
//
// The runs are page numbers in the memory file; consecutive first touches
// of adjacent pages share a run.

var wsMagic = [8]byte{'E', 'M', 'B', 'R', 'W', 'S', 'E', 'T'}

var tagWorkingSet = [4]byte{'W', 'S', 'E', 'T'}

const (
	wsMajor = 1
	wsMinor = 0
)

// PageRun is a run of consecutive memory-file pages.
type PageRun struct {
	First uint64
	Pages uint32
}

// WorkingSet is a recorded working set.
type WorkingSet struct {
	// Snapshot is the ID of the snapshot it was recorded from.
	Snapshot ID
	// Runs are the pages, in first-touch order.
	Runs []PageRun
}

// Pages returns the number of pages in the set.
func (w *WorkingSet) Pages() uint64 {
	var n uint64
	for _, r := range w.Runs {
		n += uint64(r.Pages)
	}
	return n
}

// workingSetFromOrder builds a working set from pages in touch order.
func workingSetFromOrder(id ID, order []uint64) *WorkingSet {
	w := &WorkingSet{Snapshot: id}
	for _, p := range order {
		if n := len(w.Runs); n > 0 {
			last := &w.Runs[n-1]
			if last.First+uint64(last.Pages) == p && last.Pages < 1<<31 {
				last.Pages++
				continue
			}
		}
		w.Runs = append(w.Runs, PageRun{First: p, Pages: 1})
	}
	return w
}

// MarshalBinary encodes the working-set file.
func (w *WorkingSet) MarshalBinary() ([]byte, error) {
	e := &encoder{}
	e.raw(w.Snapshot[:])
	e.u64(w.Pages())
	e.u32(uint32(len(w.Runs)))
	for _, r := range w.Runs {
		e.u64(r.First)
		e.u32(r.Pages)
	}
	return frame(wsMagic, wsMajor, wsMinor, []section{{tag: tagWorkingSet, version: 1, payload: e.b}}), nil
}

// UnmarshalWorkingSet decodes a working-set file for the snapshot id whose
// memory file has filePages pages; every run must lie inside it and no
// page may appear twice.
func UnmarshalWorkingSet(b []byte, id ID, filePages uint64) (*WorkingSet, error) {
	_, secs, err := unframe(b, wsMagic, wsMajor)
	if err != nil {
		return nil, err
	}
	var w *WorkingSet
	for _, s := range secs {
		if s.tag != tagWorkingSet {
			continue
		}
		if s.version != 1 {
			return nil, fmt.Errorf("%w: working-set section version %d", ErrVersion, s.version)
		}
		if w != nil {
			return nil, fmt.Errorf("%w: two working-set sections", ErrCorrupt)
		}
		d := &decoder{b: s.payload}
		w = &WorkingSet{}
		copy(w.Snapshot[:], d.take(16))
		total := d.u64()
		n := d.count(12, maxExtents)
		w.Runs = make([]PageRun, 0, n)
		for range n {
			w.Runs = append(w.Runs, PageRun{First: d.u64(), Pages: d.u32()})
		}
		if err := d.done(); err != nil {
			return nil, err
		}
		if total != w.Pages() {
			return nil, fmt.Errorf("%w: working set declares %d pages, runs hold %d", ErrCorrupt, total, w.Pages())
		}
	}
	if w == nil {
		return nil, fmt.Errorf("%w: no working-set section", ErrCorrupt)
	}
	if w.Snapshot != id {
		return nil, fmt.Errorf("%w: working set recorded for snapshot %s, not %s", ErrMismatch, w.Snapshot, id)
	}
	sorted := slices.Clone(w.Runs)
	slices.SortFunc(sorted, func(a, b PageRun) int { return cmp.Compare(a.First, b.First) })
	var end uint64
	for _, r := range sorted {
		if r.Pages == 0 || r.First < end || r.First+uint64(r.Pages) > filePages {
			return nil, fmt.Errorf("%w: working-set run [%d,+%d) overlaps or lies outside %d pages", ErrCorrupt, r.First, r.Pages, filePages)
		}
		end = r.First + uint64(r.Pages)
	}
	return w, nil
}

// ReadWorkingSet reads the working-set file of snapshot s.
func ReadWorkingSet(s *Snapshot) (*WorkingSet, error) {
	b, err := readLimited(s.WorkingSetPath(), maxStateFile)
	if err != nil {
		return nil, err
	}
	w, err := UnmarshalWorkingSet(b, s.State.ID, s.State.MemorySize()/pageSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.WorkingSetPath(), err)
	}
	return w, nil
}

// writeWorkingSet atomically writes w as the working-set file at path.
func writeWorkingSet(path string, w *WorkingSet) error {
	b, err := w.MarshalBinary()
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Dir(path), filepath.Base(path), func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// installPlan orders a working set for bulk installation: it takes the
// pages in first-touch order in batches of batchPages, sorts each batch by
// file offset and coalesces adjacent pages, so the guest's earliest pages
// come first but the file is read in long sequential runs.
func installPlan(w *WorkingSet, batchPages uint64) []Extent {
	var out []Extent
	var batch []uint64
	flush := func() {
		slices.Sort(batch)
		for _, p := range batch {
			off := p * pageSize
			if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == off && out[n-1].Length < maxWrite {
				out[n-1].Length += pageSize
				continue
			}
			out = append(out, Extent{Offset: off, Length: pageSize})
		}
		batch = batch[:0]
	}
	for _, r := range w.Runs {
		for i := uint64(0); i < uint64(r.Pages); i++ {
			batch = append(batch, r.First+i)
			if uint64(len(batch)) == batchPages {
				flush()
			}
		}
	}
	flush()
	return out
}
