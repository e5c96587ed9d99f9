package block

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/memory"
)

// segment is a piece of guest memory a request reads or writes.
type segment struct {
	addr uint64
	n    uint32
}

// request is a parsed virtio_blk_req.
type request struct {
	typ    uint32
	sector uint64
	// data are the data buffers: readable ones after the header for OUT,
	// writable ones before the status byte for the others.
	data []segment
	len  uint64
	// status is the address of the status byte.
	status uint64
}

// parse splits a chain into header, data and status. It returns an error
// (and false) when the chain has no writable byte for the status, so no
// answer is possible; an error with true means the status can be written.
func parse(c *virtio.Chain) (request, bool, error) {
	var r request
	w := c.Writable()
	if len(w) == 0 {
		return r, false, fmt.Errorf("%w: no device-writable status byte", virtio.ErrBadRequest)
	}
	last := w[len(w)-1]
	r.status = last.Addr + uint64(last.Len) - 1
	var hdr [headerSize]byte
	if _, err := io.ReadFull(c.Reader(), hdr[:]); err != nil {
		return r, true, fmt.Errorf("%w: header is not %d device-readable bytes", virtio.ErrBadRequest, headerSize)
	}
	r.typ = binary.LittleEndian.Uint32(hdr[0:])
	r.sector = binary.LittleEndian.Uint64(hdr[8:])
	if r.typ == TypeOut {
		r.data = segments(c.Readable(), headerSize, 0)
		if len(w) != 1 || last.Len != 1 {
			// Writes carry only the status byte in writable memory.
			return r, true, fmt.Errorf("%w: write request with %d writable buffers", virtio.ErrBadRequest, len(w))
		}
	} else {
		r.data = segments(w, 0, 1)
	}
	for _, s := range r.data {
		r.len += uint64(s.n)
	}
	return r, true, nil
}

// segments returns descs minus skip bytes at the front and trim at the end.
func segments(descs []virtio.Descriptor, skip, trim uint64) []segment {
	var out []segment
	var total uint64
	for _, d := range descs {
		total += uint64(d.Len)
	}
	if total < skip+trim {
		return nil
	}
	keep := total - skip - trim
	for _, d := range descs {
		a, n := d.Addr, uint64(d.Len)
		if skip >= n {
			skip -= n
			continue
		}
		a, n, skip = a+skip, n-skip, 0
		n = min(n, keep)
		if n == 0 {
			break
		}
		out = append(out, segment{a, uint32(n)})
		keep -= n
	}
	return out
}

// serve handles one request and returns the used length.
func (d *Device) serve(a *virtio.Activation, c *virtio.Chain) uint32 {
	r, answerable, err := parse(c)
	if !answerable {
		d.log.Debug("dropping request", "head", c.Head, "err", err)
		return 0
	}
	status, written := byte(StatusOK), uint64(0)
	if err != nil {
		d.log.Debug("bad request", "head", c.Head, "err", err)
		status = StatusIOErr
	} else {
		d.mu.RLock()
		status, written = d.do(a.Mem, r)
		d.mu.RUnlock()
	}
	if err := a.Mem.WriteAt([]byte{status}, r.status); err != nil {
		return 0 // cannot happen: the chain was validated
	}
	return uint32(min(written+1, 1<<32-1))
}

// do performs a well-formed request with d.mu held for reading; it returns
// the status and the number of data bytes written to the guest.
func (d *Device) do(mem memory.Accessor, r request) (byte, uint64) {
	switch r.typ {
	case TypeIn, TypeOut:
		if r.typ == TypeOut && d.readOnly {
			return StatusIOErr, 0
		}
		off, ok := d.checkRange(r.sector, r.len)
		if !ok {
			d.log.Debug("request out of range", "type", r.typ, "sector", r.sector, "len", r.len)
			return StatusIOErr, 0
		}
		var err error
		if r.typ == TypeIn {
			err = d.transfer(mem, r.data, off, false)
		} else {
			err = d.transfer(mem, r.data, off, true)
		}
		if err != nil {
			d.log.Warn("I/O error", "type", r.typ, "sector", r.sector, "err", err)
			return StatusIOErr, 0
		}
		if r.typ == TypeIn {
			return StatusOK, r.len
		}
		return StatusOK, 0
	case TypeFlush:
		if d.readOnly || d.file == nil {
			return StatusOK, 0
		}
		if err := d.file.Sync(); err != nil {
			d.log.Warn("flush", "err", err)
			return StatusIOErr, 0
		}
		return StatusOK, 0
	case TypeGetID:
		if r.len < IDBytes {
			return StatusIOErr, 0
		}
		if err := writeSegments(mem, r.data, d.id[:]); err != nil {
			return StatusIOErr, 0
		}
		return StatusOK, IDBytes
	}
	return StatusUnsupp, 0
}

// checkRange returns the byte offset of [sector, sector+n bytes) if it is a
// whole number of sectors inside the image (never on an empty drive).
func (d *Device) checkRange(sector, n uint64) (int64, bool) {
	if d.file == nil || n%SectorSize != 0 || sector > d.capacity || n/SectorSize > d.capacity-sector {
		return 0, false
	}
	return int64(sector * SectorSize), true
}

// transfer moves data between the image at off and guest memory: straight
// into or out of guest memory where a segment maps to one region, through
// a bounce buffer otherwise.
func (d *Device) transfer(mem memory.Accessor, segs []segment, off int64, toImage bool) error {
	for _, s := range segs {
		buf, err := mem.Slice(s.addr, uint64(s.n))
		bounce := err != nil
		if bounce {
			buf = make([]byte, s.n)
			if toImage {
				if err := mem.ReadAt(buf, s.addr); err != nil {
					return err
				}
			}
		}
		if toImage {
			_, err = d.file.WriteAt(buf, off)
		} else {
			_, err = d.file.ReadAt(buf, off)
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("image shrank under the device: %w", err)
			}
		}
		if err != nil {
			return err
		}
		if bounce && !toImage {
			if err := mem.WriteAt(buf, s.addr); err != nil {
				return err
			}
		}
		off += int64(s.n)
	}
	return nil
}

// writeSegments copies b into the segments in order.
func writeSegments(mem memory.Accessor, segs []segment, b []byte) error {
	for _, s := range segs {
		if len(b) == 0 {
			return nil
		}
		k := min(len(b), int(s.n))
		if err := mem.WriteAt(b[:k], s.addr); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}
