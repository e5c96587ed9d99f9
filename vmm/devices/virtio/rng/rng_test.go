package rng_test

import (
	"bytes"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/rng"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/memory"
)

func TestEntropy(t *testing.T) {
	tests := []struct {
		name    string
		bufs    []virtiotest.Buf
		wantLen uint32
	}{
		{"one buffer", []virtiotest.Buf{virtiotest.In(64)}, 64},
		{"two buffers", []virtiotest.Buf{virtiotest.In(16), virtiotest.In(48)}, 64},
		{"readable ignored", []virtiotest.Buf{virtiotest.Out([]byte{1, 2}), virtiotest.In(8)}, 8},
		{"only readable", []virtiotest.Buf{virtiotest.Out([]byte{1, 2})}, 0},
		{"capped", []virtiotest.Buf{virtiotest.In(rng.MaxRequest + 4096)}, rng.MaxRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: 4 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			dev, err := rng.New(rng.Config{QueueSize: 8})
			if err != nil {
				t.Fatal(err)
			}
			irq := &virtiotest.Interrupt{}
			tr, err := mmio.New(mmio.Config{Device: dev, Memory: mem, Interrupt: irq})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			drv := virtiotest.MMIO{T: t, Dev: tr}
			q := virtiotest.NewQueue(t, mem, 0x100000, 8)
			drv.Init(^uint64(0), q)
			if id := drv.Read32(mmio.RegDeviceID); id != uint32(virtio.TypeRNG) {
				t.Fatalf("device ID %d", id)
			}
			c := q.Add(tt.bufs...)
			drv.Kick(0)
			u := q.MustPopUsed()
			if u.ID != uint32(c.Head) || u.Len != tt.wantLen || irq.Count() != 1 {
				t.Fatalf("used %+v, %d interrupts; want length %d", u, irq.Count(), tt.wantLen)
			}
			var got []byte
			for i, b := range c.Bufs {
				if b.Write {
					got = append(got, q.Read(c.Addrs[i], b.Len)...)
				}
			}
			if tt.wantLen >= 16 && bytes.Count(got[:tt.wantLen], []byte{0}) > int(tt.wantLen)/4 {
				t.Errorf("buffer does not look random: %x", got[:16])
			}
		})
	}
}

func TestState(t *testing.T) {
	d, _ := rng.New(rng.Config{QueueSize: 64})
	d2, err := rng.FromState(d.State())
	if err != nil || d2.QueueMaxSizes()[0] != 64 {
		t.Fatalf("FromState = %v, %v", d2, err)
	}
	if _, err := rng.New(rng.Config{QueueSize: 3}); err == nil {
		t.Error("queue size 3 accepted")
	}
}
