package virtiotest

import (
	"sync"
	"time"
)

// Interrupt records Trigger calls; it implements devices.Interrupt.
type Interrupt struct {
	mu   sync.Mutex
	n    int
	wake chan struct{}
}

// Trigger implements devices.Interrupt.
func (i *Interrupt) Trigger() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.n++
	if i.wake != nil {
		close(i.wake)
		i.wake = nil
	}
	return nil
}

// Count returns how many times the interrupt was raised.
func (i *Interrupt) Count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.n
}

// WaitFor waits until the count reaches n or timeout passes, and reports
// whether it did.
func (i *Interrupt) WaitFor(n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		i.mu.Lock()
		if i.n >= n {
			i.mu.Unlock()
			return true
		}
		if i.wake == nil {
			i.wake = make(chan struct{})
		}
		w := i.wake
		i.mu.Unlock()
		select {
		case <-w:
		case <-deadline:
			return false
		}
	}
}
