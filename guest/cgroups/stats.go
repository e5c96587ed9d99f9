package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stats are a container's resource figures.
type Stats struct {
	CPUUsageNs, CPUUserNs, CPUSystemNs uint64
	MemoryUsage, MemoryLimit           uint64
	Pids                               uint64
}

// Stats reads the group's cpu.stat, memory.current, memory.max and
// pids.current. Files of controllers that are not enabled are skipped.
func (g *Group) Stats() (Stats, error) {
	var s Stats
	if data, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat")); err == nil {
		kv := parseKV(data)
		s.CPUUsageNs = kv["usage_usec"] * 1000
		s.CPUUserNs = kv["user_usec"] * 1000
		s.CPUSystemNs = kv["system_usec"] * 1000
	} else if !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("cpu.stat: %w", err)
	}
	var err error
	if s.MemoryUsage, err = readUint(filepath.Join(g.dir, "memory.current")); err != nil {
		return s, err
	}
	if s.MemoryLimit, err = readUint(filepath.Join(g.dir, "memory.max")); err != nil {
		return s, err
	}
	if s.Pids, err = readUint(filepath.Join(g.dir, "pids.current")); err != nil {
		return s, err
	}
	return s, nil
}

// parseKV parses "key value" lines.
func parseKV(data []byte) map[string]uint64 {
	kv := make(map[string]uint64)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			kv[f[0]] = v
		}
	}
	return kv
}

// readUint reads a one-number file; "max" and a missing file read as 0.
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}
