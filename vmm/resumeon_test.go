package vmm_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
)

// TestResumeOn: an armed resume fires when its fd becomes readable, runs
// prepare on the vCPU's own thread and enters the guest if prepare says so;
// otherwise the vCPU stays paused and answers the usual requests. An armed,
// never fired resume does not keep Stop from working.
func TestResumeOn(t *testing.T) {
	tests := []struct {
		name    string
		run     bool // prepare's answer
		fire    bool // make the fd readable
		running bool // want the guest running afterwards
	}{
		{name: "fires and runs", run: true, fire: true, running: true},
		{name: "prepare declines", run: false, fire: true},
		{name: "never fires", fire: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := openKVM(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			g := countGuest(t, ctx, sys, false)
			c := g.VCPUs()[0]
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fds[0])
			defer unix.Close(fds[1])
			if err := g.ResumeOn(fds[1], func() (bool, func()) { return true, nil }); err == nil {
				t.Fatal("ResumeOn before StartPaused succeeded")
			}
			g.StartPaused()
			var calls, onThread, thens atomic.Int32
			var thenState atomic.Int32
			vcpuTID := tidOf(t, ctx, c)
			prepare := func() (bool, func()) {
				calls.Add(1)
				if unix.Gettid() == vcpuTID {
					onThread.Add(1)
				}
				return tt.run, func() { thens.Add(1); thenState.Store(int32(c.State())) }
			}
			if err := g.ResumeOn(fds[1], prepare); err != nil {
				t.Fatal(err)
			}
			if tt.fire {
				if _, err := unix.Write(fds[0], []byte("claim")); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(100 * time.Millisecond)
			wantCalls := int32(0)
			if tt.fire {
				wantCalls = 1
			}
			if calls.Load() != wantCalls || onThread.Load() != wantCalls || thens.Load() != wantCalls {
				t.Fatalf("prepare ran %d times (%d on the vCPU thread, then %d), want %d", calls.Load(), onThread.Load(), thens.Load(), wantCalls)
			}
			// then runs once the state says what prepare decided.
			if wantCalls == 1 && (vmm.VCPUState(thenState.Load()) == vmm.VCPURunning) != tt.run {
				t.Fatalf("then saw state %v, prepare said run=%v", vmm.VCPUState(thenState.Load()), tt.run)
			}
			if got := c.State() == vmm.VCPURunning; got != tt.running {
				t.Fatalf("vCPU state %v after the trigger, want running=%v", c.State(), tt.running)
			}
			if tt.running {
				// It really runs: the counter advances.
				if err := g.Pause(ctx); err != nil {
					t.Fatal(err)
				}
				if r := regs(t, ctx, c); r.RCX == 0 {
					t.Fatal("the guest did not run after the trigger")
				}
				if err := g.Start(ctx); err == nil {
					t.Fatal("Start after a fired ResumeOn succeeded")
				}
				if err := g.Resume(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				// Still paused and serving requests: a Do answers, and a
				// normal start runs the guest.
				if r := regs(t, ctx, c); r.RCX != 0 {
					t.Fatalf("counter %d: the guest ran", r.RCX)
				}
				if err := g.Start(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if c.State() != vmm.VCPUFinished {
				t.Fatalf("state %v after Stop", c.State())
			}
		})
	}
}

// TestStopWhileArmed: stopping a machine whose resume is armed and never
// fired ends its vCPU threads.
func TestStopWhileArmed(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := countGuest(t, ctx, sys, false)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	g.StartPaused()
	if err := g.ResumeOn(p[0], func() (bool, func()) { return true, nil }); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.VCPUs()[0].Done():
	default:
		t.Fatal("vCPU thread still there after Stop")
	}
}

func tidOf(t *testing.T, ctx context.Context, c *vmm.VCPU) int {
	t.Helper()
	var tid int
	if err := c.Do(ctx, func(*kvm.VCPU) error { tid = unix.Gettid(); return nil }); err != nil {
		t.Fatal(err)
	}
	return tid
}

// TestResumeOnAny: a resume armed on several fds fires for a message on
// any of them, here the second, and prepare sees it there.
func TestResumeOnAny(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := countGuest(t, ctx, sys, false)
	var a, b [2]int
	for _, p := range []*[2]int{&a, &b} {
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
	}
	g.StartPaused()
	fired := make(chan int, 1)
	prepare := func() (bool, func()) {
		buf := make([]byte, 8)
		for _, fd := range []int{a[0], b[0]} {
			if n, _ := unix.Read(fd, buf); n > 0 {
				fired <- fd
			}
		}
		return true, nil
	}
	if err := g.ResumeOnAny([]int{a[0], b[0]}, prepare); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(b[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case fd := <-fired:
		if fd != b[0] {
			t.Fatalf("prepare read fd %d, want the second one (%d)", fd, b[0])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a message on the second fd did not fire the resume")
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.VCPUs()[0].State() != vmm.VCPURunning {
		if time.Now().After(deadline) {
			t.Fatalf("vCPU state %v after the resume fired", g.VCPUs()[0].State())
		}
		time.Sleep(time.Millisecond)
	}
	if err := g.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}
