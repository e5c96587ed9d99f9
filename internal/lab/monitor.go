package lab

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// monitorFD is the QEMU child's human monitor (HMP) socket; see qemuArgs.
const monitorFD = 5

// freezeSamples is how many register dumps are taken of a frozen L1; more
// than one shows whether its vCPU is halted (same RIP, HLT=1) or spinning.
const freezeSamples = 3

// cpuState asks QEMU's monitor for L1's vCPU registers freezeSamples times,
// half a second apart, and for its local APIC (timer) state, and returns
// what it answered (bounded to a few seconds). It is called before a
// frozen L1 is killed, so that the error says where L1 was stuck: QEMU's
// main loop answers the monitor even while its vCPU thread runs guest code.
func cpuState(mon *os.File) string {
	if mon == nil {
		return ""
	}
	var regs []string
	for i := 0; i < freezeSamples; i++ {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		out, err := monitorCommand(mon, "info registers")
		if r := cleanMonitor(out); r != "" {
			regs = append(regs, r)
		}
		if err != nil {
			regs = append(regs, fmt.Sprintf("(monitor: %v)", err))
			break
		}
	}
	if out, err := monitorCommand(mon, "info lapic"); err == nil {
		if l := lapicSummary(out); l != "" {
			regs = append(regs, l)
		}
	}
	return strings.Join(regs, "\n")
}

// monitorCommand sends one HMP command and returns what the monitor wrote
// until it went quiet for a moment (at most two seconds).
func monitorCommand(mon *os.File, cmd string) (string, error) {
	if _, err := mon.WriteString(cmd + "\n"); err != nil {
		return "", err
	}
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		_ = mon.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := mon.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return out.String(), nil
}

// lapicSummary keeps the timer and interrupt lines of "info lapic".
func lapicSummary(s string) string {
	var keep []string
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") {
		for _, p := range []string{"dumping local APIC", "LVT0", "LVTT", "Timer", "ESR", "ISR", "IRR", "APR", "PPR"} {
			if strings.HasPrefix(strings.TrimSpace(line), p) {
				keep = append(keep, "LAPIC "+strings.TrimSpace(line))
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}

// keptRegisters are the lines of QEMU's "info registers" worth reporting:
// general registers, code segment and control registers, not FPU or
// vector state.
var keptRegisters = []string{"CPU#", "RAX=", "RSI=", "R8 =", "R12=", "RIP=", "CS =", "CR0=", "EFER="}

// cleanMonitor drops the monitor's banner, prompts, echoed commands,
// terminal escapes and FPU/vector registers, keeping the lines in
// keptRegisters.
func cleanMonitor(s string) string {
	var keep []string
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") {
		if i := strings.LastIndex(line, "\x1b["); i >= 0 {
			// readline redraws the echoed command with escape sequences.
			line = line[i:]
			if j := strings.IndexAny(line, "DKC"); j >= 0 {
				line = line[j+1:]
			}
		}
		line = strings.TrimPrefix(line, "(qemu) ")
		for _, p := range keptRegisters {
			if strings.HasPrefix(line, p) {
				keep = append(keep, line)
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}

var ripRe = regexp.MustCompile(`RIP=([0-9a-f]{16})`)

// kernelSpan bounds how far past _text a RIP is taken as kernel text.
const kernelSpan = 64 << 20

// annotateRIP appends "(_text+0xoff)" after each RIP in regs that lies in
// L1's kernel text, which starts at text (KASLR-shifted, as L1 reported
// it). Debian's kernel package ships no real System.map; the offset is
// resolved with the same kernel's /proc/kallsyms, e.g. from
// "ember lab run -- cat /proc/kallsyms". Without text, regs are returned
// as they are.
func annotateRIP(regs string, text uint64) string {
	if text == 0 {
		return regs
	}
	return ripRe.ReplaceAllStringFunc(regs, func(m string) string {
		addr, err := strconv.ParseUint(m[4:], 16, 64)
		if err != nil || addr < text || addr-text >= kernelSpan {
			return m
		}
		return fmt.Sprintf("%s (_text+%#x)", m, addr-text)
	})
}
