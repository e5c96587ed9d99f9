package container

import (
	"strings"

	"golang.org/x/sys/unix"
)

// mountFlags are the flags parsed from fstab-style options.
type mountFlags struct {
	set         uintptr // flags for mount(2)
	clear       uintptr // flags explicitly turned off (rw, suid, ...)
	propagation uintptr // MS_SHARED, MS_PRIVATE, ... (applied separately)
	bind        bool
}

var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"async":       {true, unix.MS_SYNCHRONOUS},
	"dirsync":     {false, unix.MS_DIRSYNC},
	"noatime":     {false, unix.MS_NOATIME},
	"atime":       {true, unix.MS_NOATIME},
	"nodiratime":  {false, unix.MS_NODIRATIME},
	"diratime":    {true, unix.MS_NODIRATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"norelatime":  {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"mand":        {false, unix.MS_MANDLOCK},
	"nomand":      {true, unix.MS_MANDLOCK},
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
	"remount":     {false, unix.MS_REMOUNT},
}

var propagationOptions = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseOptions splits options into mount flags and the data string passed
// to the filesystem (mode=755, size=64k, ...).
func parseOptions(opts []string) (mountFlags, string) {
	var f mountFlags
	var data []string
	for _, o := range opts {
		if fo, ok := flagOptions[o]; ok {
			if fo.clear {
				f.set &^= fo.flag
				f.clear |= fo.flag
			} else {
				f.set |= fo.flag
			}
			if fo.flag&unix.MS_BIND != 0 {
				f.bind = true
			}
			continue
		}
		if p, ok := propagationOptions[o]; ok {
			f.propagation |= p
			continue
		}
		if o == "" {
			continue
		}
		data = append(data, o)
	}
	return f, strings.Join(data, ",")
}
