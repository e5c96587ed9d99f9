package pool

import (
	"encoding/json"
	"testing"
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
