package x86

import "github.com/embervm/ember/vmm/kvm"

// Model-specific registers set at boot.
const (
	MSRIA32TSC         = 0x10
	MSRIA32SysenterCS  = 0x174
	MSRIA32SysenterESP = 0x175
	MSRIA32SysenterEIP = 0x176
	MSRIA32MiscEnable  = 0x1a0
	MSRMTRRDefType     = 0x2ff
	MSRSTAR            = 0xc0000081
	MSRLSTAR           = 0xc0000082
	MSRCSTAR           = 0xc0000083
	MSRSyscallMask     = 0xc0000084
	MSRKernelGSBase    = 0xc0000102
	MiscEnableFastStr  = 1 << 0
	MTRRDefTypeEnable  = 1 << 11
	MTRRTypeWriteBack  = 6
)

// BootMSRs returns the MSR values for a vCPU at boot: syscall and sysenter
// entry points cleared (the kernel sets them), TSC at zero, fast string
// operations enabled and write-back as the default memory type with MTRRs
// on (no variable ranges: all RAM is write-back).
func BootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: MSRIA32SysenterCS},
		{Index: MSRIA32SysenterESP},
		{Index: MSRIA32SysenterEIP},
		{Index: MSRSTAR},
		{Index: MSRLSTAR},
		{Index: MSRCSTAR},
		{Index: MSRSyscallMask},
		{Index: MSRKernelGSBase},
		{Index: MSRIA32TSC},
		{Index: MSRIA32MiscEnable, Data: MiscEnableFastStr},
		{Index: MSRMTRRDefType, Data: MTRRDefTypeEnable | MTRRTypeWriteBack},
	}
}
