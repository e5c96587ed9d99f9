// Package serial models a 16550A UART (the PC's COM ports) for the guest's
// console: the 8250 driver of Linux, or any polled early console, runs
// against it.
//
// Output goes to an io.Writer as the guest writes THR. Input is queued by
// the VMM with Enqueue into a bounded receive FIFO. The UART's interrupt
// output is modelled as on the real chip (high while an enabled interrupt
// is pending, by IIR priority) and each rising edge calls the injected
// devices.Interrupt: the PC wires COM ports to edge-triggered ISA IRQs.
//
// The register state is a plain struct (State) for snapshots.
package serial
