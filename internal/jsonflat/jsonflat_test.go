package jsonflat

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	tests := []string{
		"", "plain", "vm-1.a_b", `quote " and \ backslash`, "tab\tnl\ncr\r",
		"ctl \x00\x01\x1f del \x7f", "<html> & more", "héllo ✓ 😀",
		"bad utf8 \xff\xfe end", "\xe2\x82", "line sep \u2028 par sep \u2029",
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		tests = append(tests, string(b))
	}
	for _, s := range tests {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, encoding/json writes %s", s, got, want)
		}
	}
}

func TestMembers(t *testing.T) {
	type member struct {
		Key  string
		Kind Kind
		Str  string
		Bool bool
		Int  int64
		Raw  string
	}
	tests := []struct {
		name string
		in   string
		want []member // nil: ErrUnsupported
	}{
		{"empty", `{}`, []member{}},
		{"space", " \t{ \"a\" : \"x\" ,\n\"b\":true }\r\n", []member{{Key: "a", Kind: String, Str: "x"}, {Key: "b", Kind: Bool, Bool: true}}},
		{"false", `{"b":false}`, []member{{Key: "b", Kind: Bool}}},
		{"nested", `{"o":{"a":"1","p":{}},"z":"2"}`, []member{{Key: "o", Kind: Object, Raw: `{"a":"1","p":{}}`}, {Key: "z", Kind: String, Str: "2"}}},
		{"unicode", `{"k":"héllo ✓"}`, []member{{Key: "k", Kind: String, Str: "héllo ✓"}}},
		{"escape", `{"k":"a\"b"}`, nil},
		{"escaped key", `{"k\u0041":"x"}`, nil},
		{"integers", `{"a":0,"b":-7,"c":123456789012345678 }`, []member{{Key: "a", Kind: Int}, {Key: "b", Kind: Int, Int: -7}, {Key: "c", Kind: Int, Int: 123456789012345678}}},
		{"19 digits", `{"n":1234567890123456789}`, nil},
		{"fraction", `{"n":1.5}`, nil},
		{"exponent", `{"n":1e3}`, nil},
		{"leading zero", `{"n":01}`, nil},
		{"minus alone", `{"n":-}`, nil},
		{"plus", `{"n":+1}`, nil},
		{"null", `{"n":null}`, nil},
		{"array", `{"a":[]}`, nil},
		{"control char", "{\"k\":\"a\x01\"}", nil},
		{"bad utf8", "{\"k\":\"\xff\"}", nil},
		{"trailing", `{"a":"x"} x`, nil},
		{"two objects", `{}{}`, nil},
		{"trailing comma", `{"a":"x",}`, nil},
		{"missing colon", `{"a" "x"}`, nil},
		{"missing value", `{"a":}`, nil},
		{"unterminated string", `{"a":"x`, nil},
		{"unterminated object", `{"a":"x"`, nil},
		{"unterminated nested", `{"a":{"b":"x"`, nil},
		{"word prefix", `{"a":trueish}`, nil},
		{"not an object", `"x"`, nil},
		{"empty input", ``, nil},
		{"bare word", `true`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := []member{}
			err := Members([]byte(tt.in), func(key string, v Value) error {
				got = append(got, member{key, v.Kind, v.Str, v.Bool, v.Int, string(v.Raw)})
				return nil
			})
			if tt.want == nil {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("Members(%q) = %+v, %v; want ErrUnsupported", tt.in, got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Members(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
	stop := errors.New("stop")
	if err := Members([]byte(`{"a":"x"}`), func(string, Value) error { return stop }); err != stop {
		t.Fatalf("the callback's error: got %v", err)
	}
}

// TestMembersAgreesWithEncodingJSON mutates valid objects at random:
// whatever Members accepts, encoding/json must read as the same members.
func TestMembersAgreesWithEncodingJSON(t *testing.T) {
	seeds := []string{
		`{"profile":"p","id":"a-1","resume":true,"no_cold":false}`,
		`{"identity":{"id":"x","nonce":"00ff","time":"2026-11-27T05:00:00.123Z","mac":"02:00:00:00:00:01"},"resume":true}`,
		`{"error":"it failed","conflict":true}`,
		`{"status":200,"claim":{"id":"a","pid":4711,"socket":"/run/x.sock","source":"pool","wait_ns":-5,"total_ns":123456789012345678}}`,
	}
	alphabet := []byte(`{}[]":,\ 	tfrueals0123nx-.eE9` + "\n\xff\x01é")
	r := rand.New(rand.NewPCG(3, 4))
	accepted := 0
	for range 20000 {
		b := []byte(seeds[r.IntN(len(seeds))])
		for range 1 + r.IntN(3) {
			i := r.IntN(len(b))
			switch r.IntN(3) {
			case 0:
				b[i] = alphabet[r.IntN(len(alphabet))]
			case 1:
				b = append(b[:i], b[i+1:]...)
			default:
				b = append(b[:i], append([]byte{alphabet[r.IntN(len(alphabet))]}, b[i:]...)...)
			}
			if len(b) == 0 {
				break
			}
		}
		got, err := decode(b)
		if err != nil {
			continue
		}
		accepted++
		var want map[string]any
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("Members accepted %q, encoding/json refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: Members read %v, encoding/json %v", b, got, want)
		}
	}
	if accepted < 1000 {
		t.Fatalf("only %d mutated inputs were accepted: the check checked little", accepted)
	}
}

// decode reads b into a map as encoding/json would into map[string]any.
func decode(b []byte) (map[string]any, error) {
	m := map[string]any{}
	err := Members(b, func(key string, v Value) error {
		switch v.Kind {
		case String:
			m[key] = v.Str
		case Bool:
			m[key] = v.Bool
		case Int:
			m[key] = float64(v.Int) // as encoding/json reads a number into any
		case Object:
			sub, err := decode(v.Raw)
			if err != nil {
				return err
			}
			m[key] = sub
		}
		return nil
	})
	return m, err
}

func TestAppendMember(t *testing.T) {
	b := append([]byte(nil), '{')
	b = AppendMember(b, "a")
	b = AppendBool(b, true)
	b = AppendMember(b, "b")
	b = AppendBool(b, false)
	b = AppendMember(b, "c")
	b = AppendString(b, "x")
	b = AppendMember(b, "d")
	b = AppendInt(b, -42)
	b = append(b, '}')
	if string(b) != `{"a":true,"b":false,"c":"x","d":-42}` {
		t.Fatalf("got %s", b)
	}
}
