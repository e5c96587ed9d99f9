package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/embervm/ember/guest/api"
)

// ErrNoBlockDevice: no disk with the serial reached the size in time.
var ErrNoBlockDevice = errors.New("block device not ready")

const (
	defaultBlockWait = 10 * time.Second
	maxBlockWait     = 5 * time.Minute
	blockPoll        = 5 * time.Millisecond
	sectorBytes      = 512
)

// blockDevice is a disk as sysfs shows it.
type blockDevice struct {
	name  string // vdb
	bytes uint64
}

// findBlockDevice looks in sysBlock (/sys/block) for the disk whose serial
// is serial and returns it with its current size; ok is false when no disk
// has that serial (yet).
func findBlockDevice(sysBlock, serial string) (blockDevice, bool, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return blockDevice{}, false, err
	}
	for _, e := range ents {
		dir := filepath.Join(sysBlock, e.Name())
		// Reading serial asks virtio_blk's device for its ID (GET_ID).
		b, err := os.ReadFile(filepath.Join(dir, "serial"))
		if err != nil || strings.TrimRight(string(b), "\n\x00") != serial {
			continue
		}
		sz, err := os.ReadFile(filepath.Join(dir, "size"))
		if err != nil {
			return blockDevice{}, false, err
		}
		sectors, err := strconv.ParseUint(strings.TrimSpace(string(sz)), 10, 64)
		if err != nil {
			return blockDevice{}, false, fmt.Errorf("%s/size: %w", dir, err)
		}
		return blockDevice{name: e.Name(), bytes: sectors * sectorBytes}, true, nil
	}
	return blockDevice{}, false, nil
}

// waitBlockDevice polls sysfs until the disk with serial has want bytes
// (any non-zero size if want is 0; size 0 if empty) and its node exists in
// devDir, or the timeout or ctx ends. The host attaches an image to a spare slot and the
// guest kernel resizes the disk when it handles the configuration-change
// interrupt, a moment later.
func waitBlockDevice(ctx context.Context, sysBlock, devDir, serial string, want uint64, empty bool, timeout time.Duration) (string, uint64, error) {
	if serial == "" {
		return "", 0, fmt.Errorf("serial is empty: %w", ErrBadRequest)
	}
	if empty && want != 0 {
		return "", 0, fmt.Errorf("empty with a size: %w", ErrBadRequest)
	}
	if want%sectorBytes != 0 {
		return "", 0, fmt.Errorf("size %d is not a whole number of sectors: %w", want, ErrBadRequest)
	}
	if timeout <= 0 {
		timeout = defaultBlockWait
	}
	timeout = min(timeout, maxBlockWait)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(blockPoll)
	defer t.Stop()
	var last blockDevice
	found := false
	for {
		d, ok, err := findBlockDevice(sysBlock, serial)
		if err != nil {
			return "", 0, fmt.Errorf("looking for disk %q: %w", serial, err)
		}
		if ok {
			last, found = d, true
			node := filepath.Join(devDir, d.name)
			ready := d.bytes != 0 && (want == 0 || d.bytes == want)
			if empty {
				ready = d.bytes == 0
			}
			if ready {
				if _, err := os.Stat(node); err == nil {
					return node, d.bytes, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			switch {
			case !found:
				return "", 0, fmt.Errorf("no disk with serial %q after %v: %w", serial, timeout, ErrNoBlockDevice)
			default:
				wantS := fmt.Sprint(want)
				switch {
				case empty:
					wantS = "0 (empty)"
				case want == 0:
					wantS = "any"
				}
				return "", 0, fmt.Errorf("disk %s (serial %q) has %d bytes after %v, want %s: %w",
					last.name, serial, last.bytes, timeout, wantS, ErrNoBlockDevice)
			}
		case <-t.C:
		}
	}
}

func (s *service) WaitBlockDevice(ctx context.Context, req *api.WaitBlockDeviceRequest) (*api.WaitBlockDeviceResponse, error) {
	timeout := time.Duration(min(req.TimeoutNs, uint64(maxBlockWait)))
	dev, n, err := waitBlockDevice(ctx, s.a.cfg.SysBlock, s.a.cfg.DevDir, req.Serial, req.SizeBytes, req.Empty, timeout)
	if err != nil {
		return nil, err
	}
	return &api.WaitBlockDeviceResponse{Device: dev, SizeBytes: n}, nil
}
