package kvm

import (
	"testing"
	"unsafe"
)

// TestIoctlSizes checks every ioctl's encoded argument size against the Go
// type passed with it and against the size in <linux/kvm.h>.
func TestIoctlSizes(t *testing.T) {
	var cpuidHdr struct{ Nent, Pad uint32 }
	var msrsHdr struct{ N, Pad uint32 }
	var msrListHdr struct{ N uint32 }
	tests := []struct {
		name  string
		req   uintptr
		goSz  uintptr
		cSize uintptr // sizeof in <linux/kvm.h>
	}{
		{"KVM_GET_MSR_INDEX_LIST", ioctlGetMSRIndexList, unsafe.Sizeof(msrListHdr), 4},
		{"KVM_GET_SUPPORTED_CPUID", ioctlGetSupportedCPUID, unsafe.Sizeof(cpuidHdr), 8},
		{"KVM_GET_DIRTY_LOG", ioctlGetDirtyLog, unsafe.Sizeof(dirtyLog{}), 16},
		{"KVM_SET_USER_MEMORY_REGION", ioctlSetUserMemoryRegion, unsafe.Sizeof(UserspaceMemoryRegion{}), 32},
		{"KVM_SET_IDENTITY_MAP_ADDR", ioctlSetIdentityMapAddr, unsafe.Sizeof(uint64(0)), 8},
		{"KVM_IRQ_LINE", ioctlIRQLine, unsafe.Sizeof(IRQLevel{}), 8},
		{"KVM_GET_IRQCHIP", ioctlGetIRQChip, unsafe.Sizeof(IRQChip{}), 520},
		{"KVM_SET_IRQCHIP", ioctlSetIRQChip, unsafe.Sizeof(IRQChip{}), 520},
		{"KVM_IRQFD", ioctlIRQFD, unsafe.Sizeof(IRQFD{}), 32},
		{"KVM_CREATE_PIT2", ioctlCreatePIT2, unsafe.Sizeof(PITConfig{}), 64},
		{"KVM_IOEVENTFD", ioctlIOEventFD, unsafe.Sizeof(IOEventFD{}), 64},
		{"KVM_SET_CLOCK", ioctlSetClock, unsafe.Sizeof(ClockData{}), 48},
		{"KVM_GET_CLOCK", ioctlGetClock, unsafe.Sizeof(ClockData{}), 48},
		{"KVM_GET_PIT2", ioctlGetPIT2, unsafe.Sizeof(PITState2{}), 112},
		{"KVM_SET_PIT2", ioctlSetPIT2, unsafe.Sizeof(PITState2{}), 112},
		{"KVM_ENABLE_CAP", ioctlEnableCap, unsafe.Sizeof(enableCap{}), 104},
		{"KVM_GET_REGS", ioctlGetRegs, unsafe.Sizeof(Regs{}), 144},
		{"KVM_SET_REGS", ioctlSetRegs, unsafe.Sizeof(Regs{}), 144},
		{"KVM_GET_SREGS", ioctlGetSregs, unsafe.Sizeof(Sregs{}), 312},
		{"KVM_SET_SREGS", ioctlSetSregs, unsafe.Sizeof(Sregs{}), 312},
		{"KVM_GET_MSRS", ioctlGetMSRs, unsafe.Sizeof(msrsHdr), 8},
		{"KVM_SET_MSRS", ioctlSetMSRs, unsafe.Sizeof(msrsHdr), 8},
		{"KVM_GET_FPU", ioctlGetFPU, unsafe.Sizeof(FPU{}), 416},
		{"KVM_SET_FPU", ioctlSetFPU, unsafe.Sizeof(FPU{}), 416},
		{"KVM_GET_LAPIC", ioctlGetLAPIC, unsafe.Sizeof(LAPICState{}), 1024},
		{"KVM_SET_LAPIC", ioctlSetLAPIC, unsafe.Sizeof(LAPICState{}), 1024},
		{"KVM_SET_CPUID2", ioctlSetCPUID2, unsafe.Sizeof(cpuidHdr), 8},
		{"KVM_GET_CPUID2", ioctlGetCPUID2, unsafe.Sizeof(cpuidHdr), 8},
		{"KVM_GET_MP_STATE", ioctlGetMPState, unsafe.Sizeof(MPState{}), 4},
		{"KVM_SET_MP_STATE", ioctlSetMPState, unsafe.Sizeof(MPState{}), 4},
		{"KVM_GET_VCPU_EVENTS", ioctlGetVCPUEvents, unsafe.Sizeof(VCPUEvents{}), 64},
		{"KVM_SET_VCPU_EVENTS", ioctlSetVCPUEvents, unsafe.Sizeof(VCPUEvents{}), 64},
		{"KVM_GET_DEBUGREGS", ioctlGetDebugRegs, unsafe.Sizeof(DebugRegs{}), 128},
		{"KVM_SET_DEBUGREGS", ioctlSetDebugRegs, unsafe.Sizeof(DebugRegs{}), 128},
		{"KVM_GET_XSAVE", ioctlGetXSave, unsafe.Sizeof(XSave{}), 4096},
		{"KVM_SET_XSAVE", ioctlSetXSave, unsafe.Sizeof(XSave{}), 4096},
		{"KVM_GET_XCRS", ioctlGetXCRs, unsafe.Sizeof(XCRs{}), 392},
		{"KVM_SET_XCRS", ioctlSetXCRs, unsafe.Sizeof(XCRs{}), 392},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ioctlSize(tt.req); got != tt.goSz {
				t.Errorf("ioctl %#x encodes size %d, Go type has %d", tt.req, got, tt.goSz)
			}
			if tt.goSz != tt.cSize {
				t.Errorf("Go type has size %d, <linux/kvm.h> has %d", tt.goSz, tt.cSize)
			}
		})
	}
}

// TestLayouts checks sizes and offsets of structures that are passed inside
// others or read from kvm_run, where no ioctl number encodes them.
func TestLayouts(t *testing.T) {
	var r RunData
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof kvm_segment", unsafe.Sizeof(Segment{}), 24},
		{"sizeof kvm_dtable", unsafe.Sizeof(DTable{}), 16},
		{"sizeof kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 40},
		{"sizeof kvm_msr_entry", unsafe.Sizeof(MSREntry{}), 16},
		{"sizeof kvm_pit_channel_state", unsafe.Sizeof(PITChannelState{}), 24},
		{"offsetof kvm_run.immediate_exit", unsafe.Offsetof(r.ImmediateExit), 1},
		{"offsetof kvm_run.exit_reason", unsafe.Offsetof(r.ExitReason), 8},
		{"offsetof kvm_run.cr8", unsafe.Offsetof(r.CR8), 16},
		{"offsetof kvm_run union", unsafe.Offsetof(r.exit), 32},
		{"offsetof kvm_vcpu_events.exception_payload", unsafe.Offsetof(VCPUEvents{}.ExceptionPayload), 56},
		{"offsetof kvm_vcpu_events.flags", unsafe.Offsetof(VCPUEvents{}.Flags), 20},
		{"offsetof kvm_sregs.cr0", unsafe.Offsetof(Sregs{}.CR0), 224},
		{"offsetof kvm_sregs.interrupt_bitmap", unsafe.Offsetof(Sregs{}.InterruptBitmap), 280},
		{"offsetof kvm_fpu.xmm", unsafe.Offsetof(FPU{}.XMM), 152},
		{"offsetof kvm_mmio.len", unsafe.Offsetof(MMIOExit{}.Len), 16},
		{"offsetof kvm_io.data_offset", unsafe.Offsetof(IOExit{}.DataOffset), 8},
		{"offsetof kvm_ioeventfd.flags", unsafe.Offsetof(IOEventFD{}.Flags), 24},
		{"offsetof kvm_clock_data.realtime", unsafe.Offsetof(ClockData{}.Realtime), 16},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}
