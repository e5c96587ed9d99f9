package vmmcmd

import (
	"sort"
	"strings"

	"github.com/embervm/ember/internal/testguest"
)

// Guests are the built-in test-guest programs (ember testguest --program,
// ember vmm --testguest). Build returns a program's code for a guest of
// mem bytes.
var Guests = map[string]struct {
	About string
	Build func(mem uint64) ([]byte, error)
}{
	"sum": {"sum guest memory above 2 MiB and report it", func(mem uint64) ([]byte, error) {
		return testguest.SumProgram(testguest.DataBase, mem-testguest.DataBase)
	}},
	"fill": {"write i*3+5 into every word above 2 MiB, report the sum", func(mem uint64) ([]byte, error) {
		return testguest.FillProgram(testguest.DataBase, mem-testguest.DataBase, 3, 5)
	}},
	"count": {"add 1..1e9, report the total and the count", func(uint64) ([]byte, error) {
		return testguest.CountProgram(1_000_000_000)
	}},
	"mmio": {"read and write the test MMIO device", func(uint64) ([]byte, error) { return testguest.MMIOProgram() }},
	"ping": {"10000 port writes (PIO round trips)", func(uint64) ([]byte, error) { return testguest.PingProgram(10_000) }},
	"spin": {"a 1e6-iteration loop", func(uint64) ([]byte, error) { return testguest.SpinProgram(1_000_000) }},
	"identity": {"wait for an identity, report it and the sum of memory above 2 MiB", func(mem uint64) ([]byte, error) {
		return testguest.WaitIdentityProgram(testguest.DataBase, mem-testguest.DataBase)
	}},
	"wild": {"write outside guest memory (shows the error path)", func(uint64) ([]byte, error) {
		return testguest.WildWriteProgram(0x80000000)
	}},
}

// GuestNames lists the names of Guests, sorted and comma-separated.
func GuestNames() string {
	names := make([]string, 0, len(Guests))
	for n := range Guests {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
