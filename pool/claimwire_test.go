package pool

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/api"
)

func TestClaimRequestWire(t *testing.T) {
	for _, req := range []ClaimRequest{
		{}, {Profile: "p"}, {Profile: "p", ID: "c-1", Resume: true, NoCold: true},
		{Profile: `we"ird <p>`, ID: "\x00\xff", NoCold: true},
	} {
		want, _ := json.Marshal(req)
		got := appendClaimRequest(nil, req)
		if string(got) != string(want) {
			t.Fatalf("appendClaimRequest(%+v) = %s; encoding/json writes %s", req, got, want)
		}
		back, err := parseClaimRequest(got)
		var wantBack ClaimRequest
		json.Unmarshal(want, &wantBack)
		if err != nil || back != wantBack {
			t.Fatalf("parseClaimRequest(%s) = %+v, %v; want %+v", got, back, err, wantBack)
		}
	}
	// Outside the fast path: as strictUnmarshal reads it, errors included.
	for _, in := range []string{
		`{"profile":"a\"b","resume":true}`,
		`{"Profile":"p","ID":"x"}`,
		`{"profile":"p","nocold":true}`, // unknown field: an error
		`{"profile":"p","resume":1}`,    // an error
		`{"profile":null}`,
		`{"profile":"p"`, // an error
	} {
		var want ClaimRequest
		wantErr := strictUnmarshal([]byte(in), &want)
		got, err := parseClaimRequest([]byte(in))
		if (err != nil) != (wantErr != nil) || (err == nil && got != want) {
			t.Errorf("parseClaimRequest(%s) = %+v, %v; strictUnmarshal: %+v, %v", in, got, err, want, wantErr)
		}
	}
}

func TestStreamAnswerWire(t *testing.T) {
	id := NewIdentity("c-1")
	for _, a := range []streamAnswer{
		{Status: 200, Claim: &Claim{ID: "c-1", PID: 4711, Socket: "/run/p/x.sock", Source: "pool", Identity: id,
			Wait: 5 * time.Microsecond, Identify: 230 * time.Microsecond, Total: 241 * time.Microsecond}},
		{Status: 200, Claim: &Claim{ID: "y", PID: 1, Socket: "/s", Vsock: "/s.vsock", Console: "/c <&>", Source: "cold",
			Identity: api.Identity{ID: "y", Nonce: "00", Time: time.Date(2026, 11, 27, 7, 0, 0, 1, time.UTC), MAC: "02:00:00:00:00:01", IP: "10.0.0.2"},
			Wait:     -1, Total: 1<<62 + 3}},
		{Status: 409, Error: `pool: empty for profile "tg"`},
		{Status: 400, Error: "bad\nline\x01\xff"},
	} {
		want, _ := json.Marshal(a)
		got, err := appendStreamAnswer(nil, a)
		if err != nil || string(got) != string(want) {
			t.Fatalf("appendStreamAnswer(%+v) = %s, %v; encoding/json writes %s", a, got, err, want)
		}
		back, err := parseStreamAnswer(got)
		if err != nil {
			t.Fatalf("parseStreamAnswer(%s): %v", got, err)
		}
		var wantBack streamAnswer
		json.Unmarshal(want, &wantBack)
		g, _ := json.Marshal(back)
		w, _ := json.Marshal(wantBack)
		if string(g) != string(w) {
			t.Fatalf("parseStreamAnswer(%s) read %s; json.Unmarshal reads %s", got, g, w)
		}
	}
	// Outside the fast path: as json.Unmarshal reads it, errors included.
	for _, in := range []string{
		`{"status":200,"claim":{"id":"a\"b","pid":3,"socket":"/s","source":"pool","identity":{"id":"a","nonce":"","time":"2026-11-27T07:00:00Z"}}}`,
		`{"status":200.0}`,
		`{"status":200,"claim":{"pid":1e3}}`,
		`{"status":200,"extra":[1,2]}`,
		`{"status":"200"}`, // an error
		`{"status":200`,    // an error
		`{"status":200,"claim":{"identity":{"time":"yesterday"}}}`, // an error
	} {
		var want streamAnswer
		wantErr := json.Unmarshal([]byte(in), &want)
		got, err := parseStreamAnswer([]byte(in))
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("parseStreamAnswer(%s): %v; json.Unmarshal: %v", in, err, wantErr)
		}
		if err == nil {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if string(g) != string(w) {
				t.Fatalf("parseStreamAnswer(%s) = %s; json.Unmarshal: %s", in, g, w)
			}
		}
	}
}
