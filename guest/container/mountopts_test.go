package container

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		opts      []string
		set, prop uintptr
		bind      bool
		data      string
	}{
		{[]string{"nosuid", "strictatime", "mode=755", "size=65536k"}, unix.MS_NOSUID | unix.MS_STRICTATIME, 0, false, "mode=755,size=65536k"},
		{[]string{"rbind", "ro", "rprivate"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, unix.MS_PRIVATE | unix.MS_REC, true, ""},
		{[]string{"ro", "rw"}, 0, 0, false, ""},
		{[]string{"newinstance", "ptmxmode=0666", "mode=0620", "gid=5", "noexec"}, unix.MS_NOEXEC, 0, false, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{nil, 0, 0, false, ""},
	}
	for _, tc := range tests {
		f, data := parseOptions(tc.opts)
		if f.set != tc.set || f.propagation != tc.prop || f.bind != tc.bind || data != tc.data {
			t.Errorf("parseOptions(%q) = %+v %q; want set %#x prop %#x bind %v data %q",
				tc.opts, f, data, tc.set, tc.prop, tc.bind, tc.data)
		}
	}
}
