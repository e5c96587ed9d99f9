package net

import (
	"io"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// transmit sends one chain's frame to the backend. The chain's readable
// buffers hold a virtio-net header and the frame; the header is replaced
// with an empty one (no offloads were negotiated). The used length is 0:
// the device writes nothing.
func (d *Device) transmit(c *virtio.Chain) uint32 {
	r := c.Reader()
	n := r.Len()
	if n < HdrSize+ethHeader || n > HdrSize+MaxFrame {
		d.txDropped.Add(1)
		d.log.Debug("dropping transmit chain of bad length", "len", n)
		return 0
	}
	buf := d.txBuf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		d.txDropped.Add(1)
		return 0
	}
	clear(buf[:HdrSize])
	if _, err := d.backend.Write(buf); err != nil {
		d.txDropped.Add(1)
		d.log.Debug("backend write", "err", err)
		return 0
	}
	d.txFrames.Add(1)
	return 0
}
