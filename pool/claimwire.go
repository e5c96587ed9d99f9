package pool

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/embervm/ember/internal/jsonflat"
)

// A claim request and its answer are written and read on the claim's
// path: these produce and accept the JSON encoding/json would, without its
// reflection (see internal/jsonflat); other input is read by
// encoding/json.

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

// appendStreamAnswer appends a as encoding/json would write it.
func appendStreamAnswer(b []byte, a streamAnswer) ([]byte, error) {
	b = append(b, '{')
	b = jsonflat.AppendMember(b, "status")
	b = jsonflat.AppendInt(b, int64(a.Status))
	if a.Claim != nil {
		var err error
		b = jsonflat.AppendMember(b, "claim")
		if b, err = appendClaim(b, a.Claim); err != nil {
			return nil, err
		}
	}
	if a.Error != "" {
		b = jsonflat.AppendMember(b, "error")
		b = jsonflat.AppendString(b, a.Error)
	}
	return append(b, '}'), nil
}

// appendClaim appends c as encoding/json would write it.
func appendClaim(b []byte, c *Claim) ([]byte, error) {
	b = append(b, '{')
	b = jsonflat.AppendMember(b, "id")
	b = jsonflat.AppendString(b, c.ID)
	b = jsonflat.AppendMember(b, "pid")
	b = jsonflat.AppendInt(b, int64(c.PID))
	b = jsonflat.AppendMember(b, "socket")
	b = jsonflat.AppendString(b, c.Socket)
	if c.Vsock != "" {
		b = jsonflat.AppendMember(b, "vsock")
		b = jsonflat.AppendString(b, c.Vsock)
	}
	if c.Console != "" {
		b = jsonflat.AppendMember(b, "console")
		b = jsonflat.AppendString(b, c.Console)
	}
	b = jsonflat.AppendMember(b, "source")
	b = jsonflat.AppendString(b, c.Source)
	b = jsonflat.AppendMember(b, "identity")
	b, err := c.Identity.AppendJSON(b)
	if err != nil {
		return nil, err
	}
	b = jsonflat.AppendMember(b, "wait_ns")
	b = jsonflat.AppendInt(b, int64(c.Wait))
	b = jsonflat.AppendMember(b, "identify_ns")
	b = jsonflat.AppendInt(b, int64(c.Identify))
	b = jsonflat.AppendMember(b, "total_ns")
	b = jsonflat.AppendInt(b, int64(c.Total))
	return append(b, '}'), nil
}

// parseStreamAnswer reads an answer line as json.Unmarshal would.
func parseStreamAnswer(b []byte) (*streamAnswer, error) {
	var a streamAnswer
	err := jsonflat.Members(b, func(key string, v jsonflat.Value) error {
		switch {
		case key == "status" && v.Kind == jsonflat.Int:
			a.Status = int(v.Int)
		case key == "error" && v.Kind == jsonflat.String:
			a.Error = v.Str
		case key == "claim" && v.Kind == jsonflat.Object:
			a.Claim = new(Claim)
			return a.Claim.unmarshalFlat(v.Raw)
		default:
			return jsonflat.ErrUnsupported
		}
		return nil
	})
	if errors.Is(err, jsonflat.ErrUnsupported) {
		a = streamAnswer{}
		err = json.Unmarshal(b, &a)
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// unmarshalFlat is the fast path of json.Unmarshal into c.
func (c *Claim) unmarshalFlat(b []byte) error {
	return jsonflat.Members(b, func(key string, v jsonflat.Value) error {
		if v.Kind == jsonflat.String {
			switch key {
			case "id":
				c.ID = v.Str
			case "socket":
				c.Socket = v.Str
			case "vsock":
				c.Vsock = v.Str
			case "console":
				c.Console = v.Str
			case "source":
				c.Source = v.Str
			default:
				return jsonflat.ErrUnsupported
			}
			return nil
		}
		if v.Kind == jsonflat.Int {
			switch key {
			case "pid":
				c.PID = int(v.Int)
			case "wait_ns":
				c.Wait = time.Duration(v.Int)
			case "identify_ns":
				c.Identify = time.Duration(v.Int)
			case "total_ns":
				c.Total = time.Duration(v.Int)
			default:
				return jsonflat.ErrUnsupported
			}
			return nil
		}
		if key == "identity" && v.Kind == jsonflat.Object {
			return c.Identity.UnmarshalFlat(v.Raw)
		}
		return jsonflat.ErrUnsupported
	})
}
