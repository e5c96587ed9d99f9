package snapshot

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/memory"
)

// dataExtents returns the page-aligned extents of f's first size bytes
// that hold data, found with SEEK_DATA/SEEK_HOLE; the rest are holes that
// read as zeros. A file system without hole support reports one extent.
func dataExtents(f *os.File, size int64) ([]Extent, error) {
	fd := int(f.Fd())
	var out []Extent
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot: SEEK_DATA: %w", err)
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("snapshot: SEEK_HOLE: %w", err)
		}
		hole = min(hole, size)
		start := uint64(data) &^ (pageSize - 1)
		end := (uint64(hole) + pageSize - 1) &^ (pageSize - 1)
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length >= start {
			out[n-1].Length = max(out[n-1].Offset+out[n-1].Length, end) - out[n-1].Offset
		} else {
			out = append(out, Extent{Offset: start, Length: end - start})
		}
		off = hole
	}
	return out, nil
}

// dataBitmap marks the file pages (of size bytes) that hold data.
func dataBitmap(f *os.File, size int64) (memory.Bitmap, error) {
	xs, err := dataExtents(f, size)
	if err != nil {
		return nil, err
	}
	pages := uint64(size) / pageSize
	b := memory.NewBitmap(pages)
	for _, x := range xs {
		for p := x.Offset / pageSize; p < (x.Offset+x.Length)/pageSize && p < pages; p++ {
			b.Set(p)
		}
	}
	return b, nil
}
