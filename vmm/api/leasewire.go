package api

import (
	"encoding/json"
	"errors"

	"github.com/embervm/ember/internal/jsonflat"
)

// The lease messages are written and read on the claim's path, where
// encoding/json's reflection costs tens of microseconds per message on
// cold caches (see internal/jsonflat). These functions produce and accept
// the same JSON; input outside the fast path's subset is read with
// encoding/json.

// AppendJSON appends c as encoding/json would write it.
func (c LeaseClaim) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	b = jsonflat.AppendMember(b, "identity")
	b, err := c.Identity.AppendJSON(b)
	if err != nil {
		return nil, err
	}
	if c.Resume {
		b = jsonflat.AppendMember(b, "resume")
		b = jsonflat.AppendBool(b, true)
	}
	return append(b, '}'), nil
}

// AppendJSON appends id as encoding/json would write it.
func (id Identity) AppendJSON(b []byte) ([]byte, error) {
	t, err := id.Time.MarshalJSON()
	if err != nil {
		return nil, err
	}
	b = append(b, '{')
	b = jsonflat.AppendMember(b, "id")
	b = jsonflat.AppendString(b, id.ID)
	b = jsonflat.AppendMember(b, "nonce")
	b = jsonflat.AppendString(b, id.Nonce)
	b = jsonflat.AppendMember(b, "time")
	b = append(b, t...)
	if id.MAC != "" {
		b = jsonflat.AppendMember(b, "mac")
		b = jsonflat.AppendString(b, id.MAC)
	}
	if id.IP != "" {
		b = jsonflat.AppendMember(b, "ip")
		b = jsonflat.AppendString(b, id.IP)
	}
	return append(b, '}'), nil
}

// ParseLeaseClaim reads a LeaseClaim as json.Unmarshal would.
func ParseLeaseClaim(b []byte) (LeaseClaim, error) {
	var c LeaseClaim
	err := jsonflat.Members(b, func(key string, v jsonflat.Value) error {
		switch {
		case key == "identity" && v.Kind == jsonflat.Object:
			return c.Identity.UnmarshalFlat(v.Raw)
		case key == "resume" && v.Kind == jsonflat.Bool:
			c.Resume = v.Bool
			return nil
		}
		return jsonflat.ErrUnsupported
	})
	if errors.Is(err, jsonflat.ErrUnsupported) {
		c = LeaseClaim{}
		err = json.Unmarshal(b, &c)
	}
	return c, err
}

// UnmarshalFlat is the fast path of json.Unmarshal into id (which it
// fills), for readers of messages that hold an identity
// (internal/jsonflat): it returns jsonflat.ErrUnsupported for input
// outside that package's subset, which the caller then decodes with
// encoding/json.
func (id *Identity) UnmarshalFlat(b []byte) error {
	return jsonflat.Members(b, func(key string, v jsonflat.Value) error {
		if v.Kind != jsonflat.String {
			return jsonflat.ErrUnsupported
		}
		switch key {
		case "id":
			id.ID = v.Str
		case "nonce":
			id.Nonce = v.Str
		case "mac":
			id.MAC = v.Str
		case "ip":
			id.IP = v.Str
		case "time":
			if err := id.Time.UnmarshalText([]byte(v.Str)); err != nil {
				return jsonflat.ErrUnsupported // encoding/json says why
			}
		default:
			return jsonflat.ErrUnsupported
		}
		return nil
	})
}

// AppendJSON appends a as encoding/json would write it.
func (a LeaseAnswer) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	if a.Error != "" {
		b = jsonflat.AppendMember(b, "error")
		b = jsonflat.AppendString(b, a.Error)
	}
	if a.Conflict {
		b = jsonflat.AppendMember(b, "conflict")
		b = jsonflat.AppendBool(b, true)
	}
	if a.Direct {
		b = jsonflat.AppendMember(b, "direct")
		b = jsonflat.AppendBool(b, true)
	}
	if a.ID != "" {
		b = jsonflat.AppendMember(b, "id")
		b = jsonflat.AppendString(b, a.ID)
	}
	if a.PID != 0 {
		b = jsonflat.AppendMember(b, "pid")
		b = jsonflat.AppendInt(b, int64(a.PID))
	}
	for _, m := range [...]struct{ key, v string }{{"socket", a.Socket}, {"vsock", a.Vsock}, {"console", a.Console}} {
		if m.v != "" {
			b = jsonflat.AppendMember(b, m.key)
			b = jsonflat.AppendString(b, m.v)
		}
	}
	return append(b, '}')
}

// ParseLeaseAnswer reads a LeaseAnswer as json.Unmarshal would.
func ParseLeaseAnswer(b []byte) (LeaseAnswer, error) {
	var a LeaseAnswer
	err := jsonflat.Members(b, func(key string, v jsonflat.Value) error {
		switch {
		case key == "conflict" && v.Kind == jsonflat.Bool:
			a.Conflict = v.Bool
			return nil
		case key == "direct" && v.Kind == jsonflat.Bool:
			a.Direct = v.Bool
			return nil
		case key == "pid" && v.Kind == jsonflat.Int && v.Int == int64(int(v.Int)):
			a.PID = int(v.Int)
			return nil
		case v.Kind == jsonflat.String:
			switch key {
			case "error":
				a.Error = v.Str
			case "id":
				a.ID = v.Str
			case "socket":
				a.Socket = v.Str
			case "vsock":
				a.Vsock = v.Str
			case "console":
				a.Console = v.Str
			default:
				return jsonflat.ErrUnsupported
			}
			return nil
		}
		return jsonflat.ErrUnsupported
	})
	if errors.Is(err, jsonflat.ErrUnsupported) {
		a = LeaseAnswer{}
		err = json.Unmarshal(b, &a)
	}
	return a, err
}
