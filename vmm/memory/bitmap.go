package memory

import "math/bits"

// Bitmap is a per-page bitmap as KVM's dirty log returns it: bit i%64 of
// word i/64 is page i of a region.
type Bitmap []uint64

// NewBitmap returns a bitmap with room for pages pages.
func NewBitmap(pages uint64) Bitmap { return make(Bitmap, (pages+63)/64) }

// Set marks page i.
func (b Bitmap) Set(i uint64) { b[i/64] |= 1 << (i % 64) }

// Test reports whether page i is marked.
func (b Bitmap) Test(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }

// Count returns the number of marked pages.
func (b Bitmap) Count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// Or merges o into b; b must be at least as long as o.
func (b Bitmap) Or(o Bitmap) {
	for i, w := range o {
		b[i] |= w
	}
}

// Pages calls f for each marked page index, in increasing order.
func (b Bitmap) Pages(f func(page uint64)) {
	for wi, w := range b {
		for w != 0 {
			t := bits.TrailingZeros64(w)
			f(uint64(wi)*64 + uint64(t))
			w &= w - 1
		}
	}
}
