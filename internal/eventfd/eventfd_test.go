package eventfd

import (
	"errors"
	"testing"
	"time"
)

func TestSignalRead(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Fd() < 0 {
		t.Fatalf("Fd = %d", e.Fd())
	}
	for _, v := range []uint64{1, 1, 5} {
		if err := e.Write(v); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := e.Read(); err != nil || got != 7 {
		t.Fatalf("Read = %d, %v; want 7", got, err)
	}
}

func TestReadBlocksUntilSignal(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	got := make(chan uint64)
	go func() {
		v, _ := e.Read()
		got <- v
	}()
	select {
	case v := <-got:
		t.Fatalf("Read returned %d before any signal", v)
	case <-time.After(20 * time.Millisecond):
	}
	if err := e.Trigger(); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != 1 {
		t.Fatalf("Read = %d, want 1", v)
	}
}

func TestCloseWakesReader(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := e.Read()
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Read after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the reader")
	}
	if err := e.Signal(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Signal after Close = %v, want ErrClosed", err)
	}
}
