package api

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestLeaseWireMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 27, 5, 30, 1, 123456789, time.FixedZone("x", 3600))
	claims := []LeaseClaim{
		{},
		{Resume: true, Identity: Identity{ID: "vm1", Nonce: "00ff", Time: at}},
		{Identity: Identity{ID: `odd "id" <&>`, Nonce: "n\x01", Time: at.UTC(), MAC: "02:00:00:00:00:01", IP: "10.0.0.2/24"}},
		{Identity: Identity{ID: "héllo\xff", IP: "fd00::2/64"}},
	}
	for _, c := range claims {
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.AppendJSON(nil)
		if err != nil || string(got) != string(want) {
			t.Fatalf("AppendJSON(%+v) = %s, %v; encoding/json writes %s", c, got, err, want)
		}
		var wantBack LeaseClaim
		json.Unmarshal(want, &wantBack)
		back, err := ParseLeaseClaim(got)
		if err != nil || !reflect.DeepEqual(back, wantBack) {
			t.Fatalf("ParseLeaseClaim(%s) = %+v, %v; want %+v", got, back, err, wantBack)
		}
	}
	if _, err := (LeaseClaim{Identity: Identity{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}).AppendJSON(nil); err == nil {
		t.Fatal("AppendJSON of a time encoding/json cannot write succeeded")
	}
	for _, a := range []LeaseAnswer{{}, {Error: "no"}, {Error: `bad "x"`, Conflict: true}, {Conflict: true},
		{Direct: true, ID: "c1"}, {Direct: true, ID: "c1", Error: "the claimer hung up"},
		{PID: 4242, Socket: "/run/x.sock", Vsock: "/run/x.sock.vsock", Console: "/run/x.console"}, {PID: 1, Socket: "/s"}} {
		want, _ := json.Marshal(a)
		got := a.AppendJSON(nil)
		if string(got) != string(want) {
			t.Fatalf("AppendJSON(%+v) = %s; encoding/json writes %s", a, got, want)
		}
		back, err := ParseLeaseAnswer(got)
		if err != nil || back != a {
			t.Fatalf("ParseLeaseAnswer(%s) = %+v, %v", got, back, err)
		}
	}
}

// TestLeaseParseFallsBack: input outside the fast path's subset reads
// exactly as json.Unmarshal reads it, errors included.
func TestLeaseParseFallsBack(t *testing.T) {
	claims := []string{
		`{"identity":{"id":"a\"b","nonce":"00"},"resume":true}`, // escape
		`{"Identity":{"ID":"x","Nonce":"00"},"RESUME":true}`,    // case-insensitive keys
		`{"identity":{"id":"x","nonce":"00","extra":1},"other":[1]}`,
		`{"identity":null,"resume":false}`,
		`{"identity":{"id":"x","time":"yesterday"}}`, // an error
		`{"resume":"yes"}`, // an error
		`{"identity":`,     // an error
		`[]`,               // an error
	}
	for _, in := range claims {
		var want LeaseClaim
		wantErr := json.Unmarshal([]byte(in), &want)
		got, err := ParseLeaseClaim([]byte(in))
		if (err != nil) != (wantErr != nil) || (err == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("ParseLeaseClaim(%s) = %+v, %v; json.Unmarshal: %+v, %v", in, got, err, want, wantErr)
		}
	}
	for _, in := range []string{`{"error":"a\nb"}`, `{"Conflict":true}`, `{"error":1}`, `{`} {
		var want LeaseAnswer
		wantErr := json.Unmarshal([]byte(in), &want)
		got, err := ParseLeaseAnswer([]byte(in))
		if (err != nil) != (wantErr != nil) || got != want {
			t.Errorf("ParseLeaseAnswer(%s) = %+v, %v; json.Unmarshal: %+v, %v", in, got, err, want, wantErr)
		}
	}
}
