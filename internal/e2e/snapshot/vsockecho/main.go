// Command vsockecho is a guest program for the snapshot lab tests: it
// listens on an AF_VSOCK stream port (the first argument, default 5000)
// and echoes every connection's bytes back, one connection per goroutine.
// A listener survives a vsock TRANSPORT_RESET (only connected sockets are
// reset), so a restored guest accepts new host connections.
//
// Build it static: CGO_ENABLED=0 go build ./internal/e2e/snapshot/vsockecho
package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func main() {
	port := uint32(5000)
	if len(os.Args) > 1 {
		p, err := strconv.ParseUint(os.Args[1], 10, 32)
		if err != nil {
			fail("port: %v", err)
		}
		port = uint32(p)
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail("socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		fail("bind: %v", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("vsockecho: listening on port %d\n", port)
	for {
		c, _, err := unix.Accept(fd)
		if err != nil {
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			fail("accept: %v", err)
		}
		go echo(c)
	}
}

func echo(fd int) {
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		for p := buf[:n]; len(p) > 0; {
			k, err := unix.Write(fd, p)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return
			}
			p = p[k:]
		}
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "vsockecho: "+format+"\n", a...)
	os.Exit(1)
}
