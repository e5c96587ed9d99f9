package block_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
)

func newSpare(t *testing.T) *fixture {
	t.Helper()
	return newFixtureConfig(t, block.Config{Spare: true, ID: "spare0", QueueSize: 16}, newImage(t))
}

func (f *fixture) capacity() uint64 {
	b := make([]byte, 8)
	f.drv.Dev.Read(mmio.ConfigSpace, b)
	return binary.LittleEndian.Uint64(b)
}

// read reads sector 0..n-1 and returns the status and the data.
func (f *fixture) read(t *testing.T, sector uint64, n uint32) (byte, []byte) {
	t.Helper()
	c := f.q.Add(virtiotest.Out(hdr(block.TypeIn, sector)), virtiotest.In(n*block.SectorSize), virtiotest.In(1))
	f.drv.Kick(0)
	f.q.MustPopUsed()
	return f.q.Read(c.Addrs[2], 1)[0], f.q.Read(c.Addrs[1], n*block.SectorSize)
}

func TestSpareAttachDetach(t *testing.T) {
	f := newSpare(t)
	if f.capacity() != 0 {
		t.Fatalf("empty spare: capacity %d", f.capacity())
	}
	if st, _ := f.read(t, 0, 1); st != block.StatusIOErr {
		t.Fatalf("read of an empty spare: status %d", st)
	}
	if _, ok := f.dev.Attached(); ok {
		t.Fatal("empty spare reports an attachment")
	}
	f.drv.AckInterrupt()
	irqs, gen := f.irq.Count(), f.drv.Read32(mmio.RegConfigGeneration)

	if err := f.dev.Attach(block.Attachment{Path: f.img, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if f.irq.Count() != irqs+1 {
		t.Errorf("attach raised %d interrupts", f.irq.Count()-irqs)
	}
	if st := f.drv.AckInterrupt(); st&virtio.InterruptConfigChange == 0 {
		t.Errorf("interrupt status %#x after attach, want config change", st)
	}
	if g := f.drv.Read32(mmio.RegConfigGeneration); g == gen {
		t.Error("config generation unchanged by attach")
	}
	if f.capacity() != sectors {
		t.Fatalf("capacity %d after attach, want %d", f.capacity(), sectors)
	}
	if st, data := f.read(t, 2, 2); st != block.StatusOK || !bytes.Equal(data, sectorData(2, 2)) {
		t.Fatalf("read after attach: status %d", st)
	}
	// A read-only attachment refuses writes (the feature bit is fixed).
	c := f.q.Add(virtiotest.Out(hdr(block.TypeOut, 0)), virtiotest.Out(make([]byte, 512)), virtiotest.In(1))
	f.drv.Kick(0)
	f.q.MustPopUsed()
	if st := f.q.Read(c.Addrs[2], 1)[0]; st != block.StatusIOErr {
		t.Errorf("write to a read-only attachment: status %d", st)
	}
	if f.drv.DeviceFeatures()&block.FeatureRO != 0 {
		t.Error("spare drive offers VIRTIO_BLK_F_RO")
	}
	if a, ok := f.dev.Attached(); !ok || a.Path != f.img || !a.ReadOnly {
		t.Errorf("Attached() = %+v %v", a, ok)
	}

	if err := f.dev.Detach(); err != nil {
		t.Fatal(err)
	}
	if st := f.drv.AckInterrupt(); st&virtio.InterruptConfigChange == 0 {
		t.Errorf("interrupt status %#x after detach", st)
	}
	if f.capacity() != 0 {
		t.Fatalf("capacity %d after detach", f.capacity())
	}
	if st, _ := f.read(t, 0, 1); st != block.StatusIOErr {
		t.Fatalf("read after detach: status %d", st)
	}
	// Read-write this time; writes reach the new file.
	img2 := newImage(t)
	if err := f.dev.Attach(block.Attachment{Path: img2}); err != nil {
		t.Fatal(err)
	}
	c = f.q.Add(virtiotest.Out(hdr(block.TypeOut, 1)), virtiotest.Out(bytes.Repeat([]byte{0xee}, 512)), virtiotest.In(1))
	f.drv.Kick(0)
	f.q.MustPopUsed()
	if st := f.q.Read(c.Addrs[2], 1)[0]; st != block.StatusOK {
		t.Fatalf("write: status %d", st)
	}
	if b, _ := os.ReadFile(img2); !bytes.Equal(b[512:1024], bytes.Repeat([]byte{0xee}, 512)) {
		t.Error("write did not reach the attached image")
	}
	if b, _ := os.ReadFile(f.img); !bytes.Equal(b, sectorData(0, sectors)) {
		t.Error("the detached image changed")
	}
}

func TestAttachBeforeActivation(t *testing.T) {
	d, err := block.New(block.Config{Spare: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Attach(block.Attachment{Path: newImage(t)}); err != nil {
		t.Fatal(err)
	}
	if d.Capacity() != sectors {
		t.Fatalf("capacity %d", d.Capacity())
	}
}

func TestAttachErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.img")
	short := filepath.Join(dir, "short.img")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(short, make([]byte, 100), 0o644)
	img := newImage(t)
	tests := []struct {
		name   string
		cfg    block.Config
		detach bool // call Detach instead of Attach
		attach block.Attachment
		want   error
	}{
		{"missing file", block.Config{Spare: true}, false, block.Attachment{Path: filepath.Join(dir, "nope")}, fs.ErrNotExist},
		{"no path", block.Config{Spare: true}, false, block.Attachment{}, block.ErrConfig},
		{"directory", block.Config{Spare: true}, false, block.Attachment{Path: dir, ReadOnly: true}, block.ErrConfig},
		{"empty image", block.Config{Spare: true}, false, block.Attachment{Path: empty}, block.ErrConfig},
		{"shorter than a sector", block.Config{Spare: true}, false, block.Attachment{Path: short}, block.ErrConfig},
		{"busy slot", block.Config{Spare: true, Path: img}, false, block.Attachment{Path: img}, block.ErrBusy},
		{"not a spare", block.Config{Path: img}, false, block.Attachment{Path: img}, block.ErrNotSpare},
		{"detach empty", block.Config{Spare: true}, true, block.Attachment{}, block.ErrEmpty},
		{"detach not a spare", block.Config{Path: img}, true, block.Attachment{}, block.ErrNotSpare},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := block.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			before := d.State()
			if tt.detach {
				err = d.Detach()
			} else {
				err = d.Attach(tt.attach)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if after := d.State(); after != before {
				t.Errorf("state changed by a failed call: %+v -> %+v", before, after)
			}
		})
	}
	if _, err := block.New(block.Config{}); !errors.Is(err, block.ErrConfig) {
		t.Errorf("New without a path and not spare: %v", err)
	}
	// A closed device (its VM going away) takes no new file, which nobody
	// would close.
	d, err := block.New(block.Config{Spare: true})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := d.Attach(block.Attachment{Path: img}); !errors.Is(err, block.ErrClosed) {
		t.Errorf("Attach after Close: %v, want ErrClosed", err)
	}
}

func TestSpareState(t *testing.T) {
	img := newImage(t)
	d, err := block.New(block.Config{Spare: true, ID: "spare1"})
	if err != nil {
		t.Fatal(err)
	}
	st := d.State()
	if st.Capacity != 0 || st.Config.Path != "" || !st.Config.Spare {
		t.Fatalf("empty spare state %+v", st)
	}
	e, err := block.FromState(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Attached(); ok || e.Capacity() != 0 || !e.Spare() {
		t.Fatal("empty spare restored with a backing file")
	}
	e.Close()

	if err := d.Attach(block.Attachment{Path: img, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	st = d.State()
	d.Close()
	if st.Capacity != sectors || st.Config.Path != img || !st.Config.ReadOnly {
		t.Fatalf("attached spare state %+v", st)
	}
	r, err := block.FromState(st)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := r.Attached(); !ok || a.Path != img || !r.Spare() || r.Features()&block.FeatureRO != 0 {
		t.Fatalf("restored attached spare: %+v %v features %#x", a, ok, r.Features())
	}
	// Still a spare: it can be detached and attached again.
	if err := r.Detach(); err != nil {
		t.Fatal(err)
	}
	r.Close()

	bad := st
	bad.Config.Path = ""
	if _, err := block.FromState(bad); !errors.Is(err, block.ErrConfig) {
		t.Errorf("empty spare with a capacity: %v", err)
	}
	os.Truncate(img, 2*block.SectorSize)
	if _, err := block.FromState(st); !errors.Is(err, block.ErrCapacityChanged) {
		t.Errorf("attached image shrank: %v", err)
	}
	os.Remove(img)
	if _, err := block.FromState(st); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("attached image gone: %v", err)
	}
}

// TestAttachWhileServing swaps the backing file while the driver keeps
// reading: every request is served wholly by one image or fails cleanly.
func TestAttachWhileServing(t *testing.T) {
	f := newSpare(t)
	img2 := filepath.Join(t.TempDir(), "other.img")
	os.WriteFile(img2, bytes.Repeat([]byte{0xab}, sectors*block.SectorSize), 0o644)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := f.img
			if i%2 == 1 {
				p = img2
			}
			if err := f.dev.Attach(block.Attachment{Path: p, ReadOnly: true}); err != nil {
				t.Error(err)
				return
			}
			if err := f.dev.Detach(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	want1, want2 := sectorData(0, 4), bytes.Repeat([]byte{0xab}, 4*block.SectorSize)
	ok := 0
	for range 2000 {
		st, data := f.read(t, 0, 4)
		switch {
		case st == block.StatusIOErr:
		case st == block.StatusOK && (bytes.Equal(data, want1) || bytes.Equal(data, want2)):
			ok++
		default:
			t.Fatalf("status %d, data %x...", st, data[:8])
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d of 2000 reads served", ok)
	if ok == 0 {
		t.Fatal("no read was served: the attach/detach churn was never mixed with I/O")
	}
}
