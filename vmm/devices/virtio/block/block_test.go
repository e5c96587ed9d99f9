package block_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/memory"
)

const sectors = 8

// newImage writes an image whose sector i is filled with byte i+1.
func newImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	var b []byte
	for i := 0; i < sectors; i++ {
		b = append(b, bytes.Repeat([]byte{byte(i + 1)}, block.SectorSize)...)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type fixture struct {
	dev *block.Device
	irq *virtiotest.Interrupt
	drv virtiotest.MMIO
	q   *virtiotest.Queue
	img string
}

func newFixture(t *testing.T, ro bool) *fixture {
	t.Helper()
	img := newImage(t)
	return newFixtureConfig(t, block.Config{Path: img, ReadOnly: ro, ID: "ember-disk-1", QueueSize: 16}, img)
}

// newFixtureConfig puts a device built from cfg behind a transport with an
// initialized driver; img is the image the test looks at.
func newFixtureConfig(t *testing.T, cfg block.Config, img string) *fixture {
	t.Helper()
	mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	f := &fixture{img: img, irq: &virtiotest.Interrupt{}}
	f.dev, err = block.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.dev.Close() })
	tr, err := mmio.New(mmio.Config{Device: f.dev, Memory: mem, Interrupt: f.irq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	f.drv = virtiotest.MMIO{T: t, Dev: tr}
	f.q = virtiotest.NewQueue(t, mem, 0x100000, 16)
	f.drv.Init(^uint64(0), f.q)
	return f
}

func hdr(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return b
}

func sectorData(first, n int) []byte {
	var b []byte
	for i := first; i < first+n; i++ {
		b = append(b, bytes.Repeat([]byte{byte(i + 1)}, block.SectorSize)...)
	}
	return b
}

const noStatus = 0xff

func TestRequests(t *testing.T) {
	out, in := virtiotest.Out, virtiotest.In
	tests := []struct {
		name     string
		ro       bool
		bufs     []virtiotest.Buf
		indirect bool
		status   byte   // noStatus: the request is dropped (used length 0)
		usedLen  uint32 // checked when status != noStatus
		readBack []byte // expected contents of the data buffer (index 1)
	}{
		{"read two sectors", false, []virtiotest.Buf{out(hdr(block.TypeIn, 0)), in(1024), in(1)}, false, block.StatusOK, 1025, sectorData(0, 2)},
		{"read split over buffers", false, []virtiotest.Buf{out(hdr(block.TypeIn, 6)), in(512), in(512), in(1)}, false, block.StatusOK, 1025, sectorData(6, 2)},
		{"read indirect", false, []virtiotest.Buf{out(hdr(block.TypeIn, 2)), in(512), in(1)}, true, block.StatusOK, 513, sectorData(2, 1)},
		{"read last sector", false, []virtiotest.Buf{out(hdr(block.TypeIn, 7)), in(512), in(1)}, false, block.StatusOK, 513, sectorData(7, 1)},
		{"read past end", false, []virtiotest.Buf{out(hdr(block.TypeIn, 7)), in(1024), in(1)}, false, block.StatusIOErr, 1, nil},
		{"read at capacity", false, []virtiotest.Buf{out(hdr(block.TypeIn, sectors)), in(512), in(1)}, false, block.StatusIOErr, 1, nil},
		{"sector overflows", false, []virtiotest.Buf{out(hdr(block.TypeIn, ^uint64(0))), in(512), in(1)}, false, block.StatusIOErr, 1, nil},
		{"partial sector", false, []virtiotest.Buf{out(hdr(block.TypeIn, 0)), in(100), in(1)}, false, block.StatusIOErr, 1, nil},
		{"flush", false, []virtiotest.Buf{out(hdr(block.TypeFlush, 0)), in(1)}, false, block.StatusOK, 1, nil},
		{"flush read-only", true, []virtiotest.Buf{out(hdr(block.TypeFlush, 0)), in(1)}, false, block.StatusOK, 1, nil},
		{"get id", false, []virtiotest.Buf{out(hdr(block.TypeGetID, 0)), in(20), in(1)}, false, block.StatusOK, 21, append([]byte("ember-disk-1"), make([]byte, 8)...)},
		{"get id short buffer", false, []virtiotest.Buf{out(hdr(block.TypeGetID, 0)), in(8), in(1)}, false, block.StatusIOErr, 1, nil},
		{"unsupported type", false, []virtiotest.Buf{out(hdr(11, 0)), in(1)}, false, block.StatusUnsupp, 1, nil},
		{"header in writable buffer", false, []virtiotest.Buf{in(16), in(512), in(1)}, false, block.StatusIOErr, 1, nil},
		{"short header", false, []virtiotest.Buf{out(hdr(block.TypeIn, 0)[:8]), in(512), in(1)}, false, block.StatusIOErr, 1, nil},
		{"no status byte", false, []virtiotest.Buf{out(hdr(block.TypeIn, 0)), out(make([]byte, 512))}, false, noStatus, 0, nil},
		{"write data in writable buffer", false, []virtiotest.Buf{out(hdr(block.TypeOut, 0)), in(512), in(1)}, false, block.StatusIOErr, 1, nil},
		{"write past end", false, []virtiotest.Buf{out(hdr(block.TypeOut, 8)), out(make([]byte, 512)), in(1)}, false, block.StatusIOErr, 1, nil},
		{"write read-only", true, []virtiotest.Buf{out(hdr(block.TypeOut, 0)), out(make([]byte, 512)), in(1)}, false, block.StatusIOErr, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.ro)
			var c virtiotest.Chain
			if tt.indirect {
				c = f.q.AddIndirect(tt.bufs...)
			} else {
				c = f.q.Add(tt.bufs...)
			}
			f.drv.Kick(0)
			u := f.q.MustPopUsed()
			if u.ID != uint32(c.Head) {
				t.Fatalf("used id %d, want %d", u.ID, c.Head)
			}
			if f.irq.Count() != 1 {
				t.Errorf("%d interrupts, want 1", f.irq.Count())
			}
			if tt.status == noStatus {
				if u.Len != 0 {
					t.Fatalf("dropped request has used length %d", u.Len)
				}
				return
			}
			last := len(c.Bufs) - 1
			st := f.q.Read(c.Addrs[last]+uint64(c.Bufs[last].Len)-1, 1)[0]
			if st != tt.status || u.Len != tt.usedLen {
				t.Fatalf("status %d used length %d, want %d %d", st, u.Len, tt.status, tt.usedLen)
			}
			if tt.readBack != nil {
				var got []byte
				for i := 1; i < last; i++ {
					got = append(got, f.q.Read(c.Addrs[i], c.Bufs[i].Len)...)
				}
				if !bytes.Equal(got, tt.readBack) {
					t.Errorf("data %x..., want %x...", got[:8], tt.readBack[:8])
				}
			}
			if img, _ := os.ReadFile(f.img); !bytes.Equal(img, sectorData(0, sectors)) {
				t.Error("image modified")
			}
		})
	}
}

func TestWriteReadBack(t *testing.T) {
	f := newFixture(t, false)
	data := bytes.Repeat([]byte("ember!!!"), 128) // two sectors
	f.q.Add(virtiotest.Out(hdr(block.TypeOut, 3)), virtiotest.Out(data[:300]), virtiotest.Out(data[300:]), virtiotest.In(1))
	f.q.Add(virtiotest.Out(hdr(block.TypeFlush, 0)), virtiotest.In(1))
	c := f.q.Add(virtiotest.Out(hdr(block.TypeIn, 3)), virtiotest.In(1024), virtiotest.In(1))
	f.drv.Kick(0)
	for i := 0; i < 3; i++ {
		if u := f.q.MustPopUsed(); (i < 2 && u.Len != 1) || (i == 2 && u.Len != 1025) {
			t.Fatalf("request %d: used %+v", i, u)
		}
	}
	if got := f.q.Read(c.Addrs[1], 1024); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	img, _ := os.ReadFile(f.img)
	want := append(append(sectorData(0, 3), data...), sectorData(5, 3)...)
	if !bytes.Equal(img, want) {
		t.Fatal("image contents differ")
	}
}

func TestConfigAndFeatures(t *testing.T) {
	for _, ro := range []bool{false, true} {
		f := newFixture(t, ro)
		b := make([]byte, 8)
		f.drv.Dev.Read(mmio.ConfigSpace, b)
		if got := binary.LittleEndian.Uint64(b); got != sectors {
			t.Errorf("capacity %d", got)
		}
		feat := f.drv.DeviceFeatures()
		if (feat&block.FeatureRO != 0) != ro || feat&block.FeatureFlush == 0 || feat&virtio.FeatureVersion1 == 0 {
			t.Errorf("read-only %v: features %#x", ro, feat)
		}
	}
}

func TestState(t *testing.T) {
	img := newImage(t)
	d, err := block.New(block.Config{Path: img, ReadOnly: true, ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	st := d.State()
	d.Close()
	if st.Capacity != sectors || st.Config.QueueSize != block.DefaultQueueSize {
		t.Fatalf("state %+v", st)
	}
	d2, err := block.FromState(st)
	if err != nil {
		t.Fatal(err)
	}
	d2.Close()
	os.Truncate(img, 4*block.SectorSize)
	if _, err := block.FromState(st); !errors.Is(err, block.ErrCapacityChanged) {
		t.Fatalf("FromState after shrink: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	img := newImage(t)
	for _, c := range []block.Config{
		{Path: img, QueueSize: 100},
		{Path: img, ID: "this serial is longer than twenty bytes"},
	} {
		if _, err := block.New(c); !errors.Is(err, block.ErrConfig) {
			t.Errorf("New(%+v) = %v", c, err)
		}
	}
	if _, err := block.New(block.Config{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing image accepted")
	}
}
