package labtest

import (
	"bufio"
	"os"
	"strings"

	"github.com/embervm/ember/internal/lab/labproto"
)

// NativeKVM reports whether this host's KVM can run guest kernels natively,
// with a reason either way. The heuristic: the CPU advertises hardware
// virtualization (vmx or svm in /proc/cpuinfo) and /dev/kvm opens. Hosts
// whose KVM backend emulates guest kernel code (kvm_pvm) lack the flags.
func NativeKVM() (bool, string) {
	flag, err := virtFlag("/proc/cpuinfo")
	if err != nil {
		return false, "cannot read /proc/cpuinfo: " + err.Error()
	}
	if flag == "" {
		return false, "the CPU has no vmx or svm flag in /proc/cpuinfo (KVM here cannot run guest kernels natively)"
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, "CPU has " + flag + " but /dev/kvm does not open: " + err.Error()
	}
	f.Close()
	return true, "CPU has " + flag + " and /dev/kvm opens"
}

// InLab reports whether this process runs inside the nested lab's L1.
func InLab() bool { return os.Getenv(labproto.GuestEnv) == "1" }

// virtFlag returns "vmx" or "svm" if the first CPU's flags list it.
func virtFlag(cpuinfo string) (string, error) {
	f, err := os.Open(cpuinfo)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(v) {
			if fl == "vmx" || fl == "svm" {
				return fl, nil
			}
		}
		return "", nil
	}
	return "", sc.Err()
}
