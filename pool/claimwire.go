package pool

import (
	"errors"

	"github.com/embervm/ember/internal/jsonflat"
)

// A claim request is written and read on the claim's path: these produce
// and accept the JSON encoding/json would, without its reflection (see
// internal/jsonflat); other input is read by encoding/json.

// appendClaimRequest appends req as encoding/json would write it.
func appendClaimRequest(b []byte, req ClaimRequest) []byte {
	b = append(b, '{')
	b = jsonflat.AppendMember(b, "profile")
	b = jsonflat.AppendString(b, req.Profile)
	if req.ID != "" {
		b = jsonflat.AppendMember(b, "id")
		b = jsonflat.AppendString(b, req.ID)
	}
	if req.Resume {
		b = jsonflat.AppendMember(b, "resume")
		b = jsonflat.AppendBool(b, true)
	}
	if req.NoCold {
		b = jsonflat.AppendMember(b, "no_cold")
		b = jsonflat.AppendBool(b, true)
	}
	return append(b, '}')
}

// parseClaimRequest reads a claim request strictly (unknown fields are
// errors), as strictUnmarshal does.
func parseClaimRequest(b []byte) (ClaimRequest, error) {
	var req ClaimRequest
	err := jsonflat.Members(b, func(key string, v jsonflat.Value) error {
		switch {
		case key == "profile" && v.Kind == jsonflat.String:
			req.Profile = v.Str
		case key == "id" && v.Kind == jsonflat.String:
			req.ID = v.Str
		case key == "resume" && v.Kind == jsonflat.Bool:
			req.Resume = v.Bool
		case key == "no_cold" && v.Kind == jsonflat.Bool:
			req.NoCold = v.Bool
		default:
			return jsonflat.ErrUnsupported
		}
		return nil
	})
	if errors.Is(err, jsonflat.ErrUnsupported) {
		req = ClaimRequest{}
		err = strictUnmarshal(b, &req)
	}
	return req, err
}
