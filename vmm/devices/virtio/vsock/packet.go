package vsock

import (
	"encoding/binary"
	"fmt"
)

// HeaderSize is the size of struct virtio_vsock_hdr (spec §5.10.6).
const HeaderSize = 44

// Well-known CIDs (spec §5.10.4).
const (
	// HostCID is the host's address.
	HostCID uint64 = 2
	// maxGuestCID is one below VMADDR_CID_ANY (2^32-1), which a guest
	// cannot have.
	maxGuestCID uint64 = 1<<32 - 2
)

// TypeStream is VIRTIO_VSOCK_TYPE_STREAM, the only socket type the device
// supports.
const TypeStream uint16 = 1

// Op is a packet's operation (spec §5.10.6).
type Op uint16

// Operations.
const (
	OpInvalid       Op = 0
	OpRequest       Op = 1
	OpResponse      Op = 2
	OpRST           Op = 3
	OpShutdown      Op = 4
	OpRW            Op = 5
	OpCreditUpdate  Op = 6
	OpCreditRequest Op = 7
)

func (o Op) String() string {
	switch o {
	case OpRequest:
		return "REQUEST"
	case OpResponse:
		return "RESPONSE"
	case OpRST:
		return "RST"
	case OpShutdown:
		return "SHUTDOWN"
	case OpRW:
		return "RW"
	case OpCreditUpdate:
		return "CREDIT_UPDATE"
	case OpCreditRequest:
		return "CREDIT_REQUEST"
	}
	return fmt.Sprintf("op(%d)", uint16(o))
}

// valid reports whether o is an operation the spec defines.
func (o Op) valid() bool { return o >= OpRequest && o <= OpCreditRequest }

// SHUTDOWN flags (spec §5.10.6.5).
const (
	// ShutdownRcv: the sender will receive no more data.
	ShutdownRcv uint32 = 1
	// ShutdownSend: the sender will send no more data.
	ShutdownSend uint32 = 2
	// shutdownBoth is both directions.
	shutdownBoth = ShutdownRcv | ShutdownSend
)

// EventTransportReset is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, the id of the
// event the device sends after a restore (spec §5.10.6.7).
const EventTransportReset uint32 = 0

// EventSize is the size of struct virtio_vsock_event.
const EventSize = 4

// Header is struct virtio_vsock_hdr, little-endian on the wire.
type Header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       Op
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

// Encode returns the header's HeaderSize bytes.
func (h Header) Encode() []byte {
	b := make([]byte, HeaderSize)
	h.put(b)
	return b
}

func (h Header) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], uint16(h.Op))
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

// DecodeHeader parses the first HeaderSize bytes of b. It reports false if
// b is shorter.
func DecodeHeader(b []byte) (Header, bool) {
	if len(b) < HeaderSize {
		return Header{}, false
	}
	le := binary.LittleEndian
	return Header{
		SrcCID:   le.Uint64(b[0:]),
		DstCID:   le.Uint64(b[8:]),
		SrcPort:  le.Uint32(b[16:]),
		DstPort:  le.Uint32(b[20:]),
		Len:      le.Uint32(b[24:]),
		Type:     le.Uint16(b[28:]),
		Op:       Op(le.Uint16(b[30:])),
		Flags:    le.Uint32(b[32:]),
		BufAlloc: le.Uint32(b[36:]),
		FwdCnt:   le.Uint32(b[40:]),
	}, true
}

func (h Header) String() string {
	return fmt.Sprintf("%s %d:%d->%d:%d len=%d type=%d flags=%#x buf_alloc=%d fwd_cnt=%d",
		h.Op, h.SrcCID, h.SrcPort, h.DstCID, h.DstPort, h.Len, h.Type, h.Flags, h.BufAlloc, h.FwdCnt)
}

// connKey names a connection by its two ports: the host's (local) and the
// guest's (peer). There is one guest, so CIDs do not take part.
type connKey struct {
	local, peer uint32
}

// rstFor is an RST from the host end of k to the guest.
func rstFor(k connKey) Header {
	return Header{SrcPort: k.local, DstPort: k.peer, Type: TypeStream, Op: OpRST}
}

// credit returns how many bytes a sender may still send to a receiver that
// advertised bufAlloc and fwdCnt, having sent txCnt in total. The counters
// wrap (spec §5.10.6.3); a receiver whose counters do not add up (fwd_cnt
// ahead of what was sent, or more in flight than its buffer) gets no more
// than its buffer, or nothing.
func credit(bufAlloc, fwdCnt, txCnt uint32) uint32 {
	inFlight := txCnt - fwdCnt
	if inFlight > bufAlloc {
		return 0
	}
	return bufAlloc - inFlight
}
