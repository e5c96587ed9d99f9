// Package jsonflat writes and reads the few small JSON objects on the warm
// pool's claim path without reflection.
//
// encoding/json is correct and general, but a claim runs on threads and
// processes that have been idle since the last one, with cold caches: on
// virtualized hosts each reflection-driven Marshal or Unmarshal of a small
// struct then costs 20-45 µs, several times over per claim. The functions
// here touch a few hundred bytes of code instead. Reading is a fast path
// only: Members accepts a strict subset of JSON (an object whose members
// are strings without escapes, booleans, small integers or nested such
// objects) and
// reports ErrUnsupported for anything else, so that callers fall back to
// encoding/json and behave exactly as before for every other input.
package jsonflat

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// ErrUnsupported reports input outside the subset Object reads; the caller
// should decode it with encoding/json instead.
var ErrUnsupported = errors.New("jsonflat: outside the fast path's subset")

// Kind is a member value's type.
type Kind uint8

// The kinds Object reads.
const (
	String Kind = iota + 1
	Bool
	Object
	// Int is an integer written without fraction or exponent, of at
	// most 18 digits (so that it fits an int64).
	Int
)

// Value is one member's value. Str holds a String, Bool a Bool, Int an
// Int; Raw holds an Object's bytes (for a nested call to Members).
type Value struct {
	Kind Kind
	Str  string
	Bool bool
	Int  int64
	Raw  []byte
}

// Members calls fn for each member of the JSON object in b, in order, and
// checks that nothing but white space follows it. It returns
// ErrUnsupported for input outside its subset (and for malformed input),
// or the first error fn returns.
func Members(b []byte, fn func(key string, v Value) error) error {
	i := skipSpace(b, 0)
	end, err := members(b, i, fn)
	if err != nil {
		return err
	}
	if skipSpace(b, end) != len(b) {
		return ErrUnsupported
	}
	return nil
}

// members reads the object starting at b[i] and returns the index after it.
func members(b []byte, i int, fn func(string, Value) error) (int, error) {
	if i >= len(b) || b[i] != '{' {
		return 0, ErrUnsupported
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		key, j, err := str(b, i)
		if err != nil {
			return 0, err
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return 0, ErrUnsupported
		}
		i = skipSpace(b, i+1)
		var v Value
		switch {
		case i >= len(b):
			return 0, ErrUnsupported
		case b[i] == '"':
			v.Kind = String
			v.Str, i, err = str(b, i)
		case b[i] == '{':
			v.Kind = Object
			j, err := members(b, i, func(string, Value) error { return nil })
			if err != nil {
				return 0, err
			}
			v.Raw, i = b[i:j], j
		case b[i] == '-' || '0' <= b[i] && b[i] <= '9':
			v.Kind = Int
			v.Int, i, err = integer(b, i)
		case hasWord(b, i, "true"):
			v.Kind, v.Bool, i = Bool, true, i+4
		case hasWord(b, i, "false"):
			v.Kind, i = Bool, i+5
		default:
			return 0, ErrUnsupported
		}
		if err != nil {
			return 0, err
		}
		if err := fn(key, v); err != nil {
			return 0, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, ErrUnsupported
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, ErrUnsupported
		}
	}
}

// str reads the string starting at b[i]: no escapes, no control
// characters, valid UTF-8.
func str(b []byte, i int) (string, int, error) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, ErrUnsupported
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[i+1 : j]
			if !utf8.Valid(s) {
				return "", 0, ErrUnsupported
			}
			return string(s), j + 1, nil
		case c == '\\' || c < 0x20:
			return "", 0, ErrUnsupported
		}
	}
	return "", 0, ErrUnsupported
}

// integer reads the integer starting at b[i]: an optional minus, then 0
// or a digit string without a leading zero, at most 18 digits, ended by
// white space, ',' or '}' (not by a fraction or an exponent).
func integer(b []byte, i int) (int64, int, error) {
	neg := b[i] == '-'
	if neg {
		i++
	}
	start := i
	var n int64
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || digits > 18 || digits > 1 && b[start] == '0' {
		return 0, 0, ErrUnsupported
	}
	if i < len(b) {
		if c := b[i]; c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != ',' && c != '}' {
			return 0, 0, ErrUnsupported
		}
	}
	if neg {
		n = -n
	}
	return n, i, nil
}

func hasWord(b []byte, i int, w string) bool {
	if len(b)-i < len(w) || string(b[i:i+len(w)]) != w {
		return false
	}
	// A word must end there ("trueish" is not true).
	if j := i + len(w); j < len(b) {
		c := b[j]
		return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '}'
	}
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// AppendString appends s as a JSON string, as encoding/json writes it
// (with its HTML-safe escapes of <, > and &, and invalid UTF-8 replaced by
// U+FFFD).
func AppendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendMember appends `"key":` after a '{' or a previous member (it
// writes the separating comma). key must need no escaping.
func AppendMember(b []byte, key string) []byte {
	if len(b) > 0 && b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

// AppendInt appends v as encoding/json writes an integer.
func AppendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }

// AppendBool appends true or false.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}
