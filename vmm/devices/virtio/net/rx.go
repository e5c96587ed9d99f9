package net

import (
	"encoding/binary"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// ethHeader is the smallest frame: destination, source, EtherType.
const ethHeader = 14

// receive reads frames from the backend and delivers each to the receive
// queue, waiting (without reading more) while it cannot.
func (d *Device) receive() {
	defer d.wg.Done()
	buf := make([]byte, HdrSize+MaxFrame)
	for {
		n, err := d.backend.Read(buf)
		if err != nil {
			select {
			case <-d.done:
			default:
				d.log.Warn("backend read failed; receive stopped", "err", err)
			}
			return
		}
		if n < HdrSize+ethHeader {
			d.rxDropped.Add(1)
			continue
		}
		frame := buf[:n]
		// One buffer per frame (no VIRTIO_NET_F_MRG_RXBUF); the backend
		// leaves this field alone.
		binary.LittleEndian.PutUint16(frame[10:], 1)
		for !d.deliver(frame) {
			select {
			case <-d.rxWake:
			case <-d.done:
				return
			}
		}
	}
}

// deliver puts frame into the next receive buffer. It returns false when
// the frame must wait (no buffer, device paused or inactive) and true once
// it is delivered or dropped.
func (d *Device) deliver(frame []byte) bool {
	consumed := false
	d.Do(func(a *virtio.Activation) error {
		q := a.Queues[RXQueue]
		defer func() {
			if q.NeedsNotification() {
				if err := a.Signal.UsedBuffer(); err != nil {
					d.log.Warn("raising interrupt", "err", err)
				}
			}
		}()
		var c *virtio.Chain
		for c == nil {
			var err error
			if c, err = q.Pop(); err != nil {
				a.Signal.NeedsReset(err)
				return err
			}
			if c != nil {
				break
			}
			// Empty: ask for a notification, then look again so that a
			// buffer posted in between is not missed.
			more, err := q.EnableNotification()
			if err != nil {
				a.Signal.NeedsReset(err)
				return err
			}
			if !more {
				return nil
			}
		}
		consumed = true
		w := c.Writer()
		if w.Len() < uint64(len(frame)) {
			// The driver must post buffers for a whole frame; keep this
			// buffer for a smaller one and drop the frame.
			q.Undo()
			d.rxDropped.Add(1)
			d.log.Debug("dropping received frame larger than the buffer", "frame", len(frame), "buffer", w.Len())
			return nil
		}
		w.Write(frame)
		if err := q.AddUsed(c.Head, w.Written()); err != nil {
			return err
		}
		d.rxFrames.Add(1)
		return nil
	})
	return consumed
}
