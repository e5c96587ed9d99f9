package mmio

import (
	"errors"
	"fmt"

	"github.com/embervm/ember/internal/eventfd"
)

// IOEvent is one ioeventfd the VMM registers with KVM for a transport: a
// 4-byte guest write of DataMatch to Addr (QueueNotify for queue Queue)
// signals FD instead of exiting to the VMM. In ember's VMM:
//
//	vm.IOEventFD(kvm.IOEventFD{Addr: e.Addr, Len: e.Len, DataMatch: e.DataMatch,
//		FD: int32(e.FD), Flags: kvm.IOEventFDFlagDataMatch})
type IOEvent struct {
	Addr      uint64
	Len       uint32
	DataMatch uint64
	FD        int
	Queue     int
}

// IOEvents returns the notifications a transport at base wants registered,
// one per queue, without file descriptors (FD is -1). It is what a VMM
// needs to unregister them (kvm.IOEventFDFlagDeassign).
func (t *Transport) IOEvents(base uint64) []IOEvent {
	evs := make([]IOEvent, len(t.maxSizes))
	for i := range evs {
		evs[i] = IOEvent{Addr: base + RegQueueNotify, Len: 4, DataMatch: uint64(i), FD: -1, Queue: i}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, e := range t.notifiers {
		evs[i].FD = e.Fd()
	}
	return evs
}

// AttachIOEventFDs makes queue notifications skip the MMIO exit: it creates
// one eventfd per queue, calls register for each (the VMM issues
// KVM_IOEVENTFD with datamatch on the transport's QueueNotify at base) and
// starts a goroutine per queue that passes the eventfd's signals to the
// device. A QueueNotify write that KVM does not catch still reaches Write,
// so registration is an optimisation, not a requirement. Close stops the
// goroutines and closes the eventfds.
func (t *Transport) AttachIOEventFDs(base uint64, register func(IOEvent) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.notifiers != nil {
		return ErrAttached
	}
	var fds []*eventfd.EventFD
	fail := func(err error) error {
		for _, e := range fds {
			e.Close()
		}
		return err
	}
	for i := range t.maxSizes {
		e, err := eventfd.New()
		if err != nil {
			return fail(err)
		}
		fds = append(fds, e)
		ev := IOEvent{Addr: base + RegQueueNotify, Len: 4, DataMatch: uint64(i), FD: e.Fd(), Queue: i}
		if err := register(ev); err != nil {
			return fail(fmt.Errorf("queue %d ioeventfd: %w", i, err))
		}
	}
	t.notifiers = fds
	for i, e := range fds {
		t.readers.Add(1)
		go t.readNotifications(i, e)
	}
	return nil
}

// readNotifications forwards queue i's eventfd signals until it is closed.
func (t *Transport) readNotifications(i int, e *eventfd.EventFD) {
	defer t.readers.Done()
	for {
		if _, err := e.Read(); err != nil {
			if !errors.Is(err, eventfd.ErrClosed) {
				t.log.Warn("reading queue notification eventfd", "queue", i, "err", err)
			}
			return
		}
		t.notify(uint32(i))
	}
}
