package agent

import (
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"google.golang.org/grpc/codes"
)

func TestSetTime(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	// Step to the current time: the handler's clock_settime runs for real,
	// and the host clock moves by no more than the call's latency.
	r, err := h.client.SetTime(ctx, &api.SetTimeRequest{UnixNano: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(r.StepNs); d > 0 || d < -time.Second {
		t.Errorf("step = %v", d)
	}
	_, err = h.client.SetTime(ctx, &api.SetTimeRequest{UnixNano: 0})
	wantCode(t, err, codes.InvalidArgument, "invalid time")
}

func TestAddEntropy(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	data := make([]byte, 64)
	for i := range data {
		data[i] = byte(i * 7)
	}
	r, err := h.client.AddEntropy(ctx, &api.AddEntropyRequest{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if r.EntropyAvail <= 0 {
		t.Errorf("entropy_avail = %d", r.EntropyAvail)
	}
	_, err = h.client.AddEntropy(ctx, &api.AddEntropyRequest{})
	wantCode(t, err, codes.InvalidArgument)
}

func TestReadyAndVersion(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	v, err := h.client.Version(ctx, &api.VersionRequest{ClientProtocolVersion: api.ProtocolVersion})
	if err != nil || v.ProtocolVersion != api.ProtocolVersion {
		t.Fatalf("version %v %v", v, err)
	}
	for want := uint64(1); want <= 2; want++ {
		r, err := h.client.Ready(ctx, &api.ReadyRequest{VmId: "vm-1"})
		if err != nil || r.Generation != want || r.UptimeSeconds <= 0 {
			t.Fatalf("ready %v %v, want generation %d", r, err, want)
		}
	}
	_, err = h.client.ConfigureNetwork(ctx, &api.ConfigureNetworkRequest{})
	wantCode(t, err, codes.Unimplemented, "network")
}
