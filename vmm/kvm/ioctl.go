package kvm

// Ioctl request numbers from <linux/kvm.h> (x86-64). Each _IOR/_IOW/_IOWR
// number encodes the size of its argument; ioctl_test.go checks those sizes
// against the Go types.
const (
	// System ioctls.
	ioctlGetAPIVersion       = 0xae00
	ioctlCreateVM            = 0xae01
	ioctlGetMSRIndexList     = 0xc004ae02 // struct kvm_msr_list (header)
	ioctlCheckExtension      = 0xae03
	ioctlGetVCPUMmapSize     = 0xae04
	ioctlGetSupportedCPUID   = 0xc008ae05 // struct kvm_cpuid2 (header)
	ioctlGetMSRFeatureIdxLst = 0xc004ae0a // struct kvm_msr_list (header)

	// VM ioctls.
	ioctlCreateVCPU           = 0xae41
	ioctlGetDirtyLog          = 0x4010ae42 // struct kvm_dirty_log
	ioctlSetUserMemoryRegion  = 0x4020ae46 // struct kvm_userspace_memory_region
	ioctlSetTSSAddr           = 0xae47
	ioctlSetIdentityMapAddr   = 0x4008ae48 // __u64
	ioctlCreateIRQChip        = 0xae60
	ioctlIRQLine              = 0x4008ae61 // struct kvm_irq_level
	ioctlGetIRQChip           = 0xc208ae62 // struct kvm_irqchip
	ioctlSetIRQChip           = 0x8208ae63 // struct kvm_irqchip
	ioctlIRQFD                = 0x4020ae76 // struct kvm_irqfd
	ioctlCreatePIT2           = 0x4040ae77 // struct kvm_pit_config
	ioctlIOEventFD            = 0x4040ae79 // struct kvm_ioeventfd
	ioctlSetClock             = 0x4030ae7b // struct kvm_clock_data
	ioctlGetClock             = 0x8030ae7c // struct kvm_clock_data
	ioctlGetPIT2              = 0x8070ae9f // struct kvm_pit_state2
	ioctlSetPIT2              = 0x4070aea0 // struct kvm_pit_state2
	ioctlEnableCap            = 0x4068aea3 // struct kvm_enable_cap
	ioctlSetGSIRouting        = 0x4008ae6a // struct kvm_irq_routing (header)
	ioctlClearDirtyLog        = 0xc018aec0 // struct kvm_clear_dirty_log
	ioctlSetBootCPUID         = 0xae78
	ioctlSetTSCKHzVM          = 0xaea2 // VM-wide default (KVM_CAP_VM_TSC_CONTROL)
	ioctlKVMClockCtrlReserved = 0xaead

	// vCPU ioctls.
	ioctlRun            = 0xae80
	ioctlGetRegs        = 0x8090ae81 // struct kvm_regs
	ioctlSetRegs        = 0x4090ae82 // struct kvm_regs
	ioctlGetSregs       = 0x8138ae83 // struct kvm_sregs
	ioctlSetSregs       = 0x4138ae84 // struct kvm_sregs
	ioctlGetMSRs        = 0xc008ae88 // struct kvm_msrs (header)
	ioctlSetMSRs        = 0x4008ae89 // struct kvm_msrs (header)
	ioctlSetSignalMask  = 0x4004ae8b // struct kvm_signal_mask (header: __u32 len, then the sigset)
	ioctlGetFPU         = 0x81a0ae8c // struct kvm_fpu
	ioctlSetFPU         = 0x41a0ae8d // struct kvm_fpu
	ioctlGetLAPIC       = 0x8400ae8e // struct kvm_lapic_state
	ioctlSetLAPIC       = 0x4400ae8f // struct kvm_lapic_state
	ioctlSetCPUID2      = 0x4008ae90 // struct kvm_cpuid2 (header)
	ioctlGetCPUID2      = 0xc008ae91 // struct kvm_cpuid2 (header)
	ioctlGetMPState     = 0x8004ae98 // struct kvm_mp_state
	ioctlSetMPState     = 0x4004ae99 // struct kvm_mp_state
	ioctlGetVCPUEvents  = 0x8040ae9f // struct kvm_vcpu_events
	ioctlSetVCPUEvents  = 0x4040aea0 // struct kvm_vcpu_events
	ioctlGetDebugRegs   = 0x8080aea1 // struct kvm_debugregs
	ioctlSetDebugRegs   = 0x4080aea2 // struct kvm_debugregs
	ioctlSetTSCKHz      = 0xaea2
	ioctlGetTSCKHz      = 0xaea3
	ioctlGetXSave       = 0x9000aea4 // struct kvm_xsave
	ioctlSetXSave       = 0x5000aea5 // struct kvm_xsave
	ioctlGetXCRs        = 0x8188aea6 // struct kvm_xcrs
	ioctlSetXCRs        = 0x4188aea7 // struct kvm_xcrs
	ioctlKVMClockCtrl   = 0xaead
	ioctlGetXSave2      = 0x9000aecf // struct kvm_xsave (may be larger; see CapXSave2)
	ioctlGetMSRFeatures = 0xc008ae88 // same number as KVM_GET_MSRS, on the system fd
)

// ioctlSize returns the argument size encoded in an ioctl request number.
func ioctlSize(req uintptr) uintptr { return (req >> 16) & 0x3fff }
