package ctrbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/embervm/ember/internal/ociimage"
)

// Runtimes compared, by containerd runtime name.
const (
	RuntimeEmber = "io.containerd.ember.v2"
	RuntimeRunc  = "io.containerd.runc.v2"
)

// ImageName is the busybox image imported for the run.
const ImageName = "docker.io/library/ember-busybox:bench"

// Paths locate what a run needs, where it runs (in L1 or on the host).
type Paths struct {
	// Ember is the ember binary the shim starts VMMs with.
	Ember string
	// Kernel and Initrd are the guest kernel (vmlinux) and the agent's
	// initramfs.
	Kernel, Initrd string
	// BinDir holds containerd, ctr, containerd-shim-ember-v2,
	// containerd-shim-runc-v2 and, for the runc runs, runc.
	BinDir string
	// Busybox is a static busybox for the container image.
	Busybox string
}

// Options configure Run.
type Options struct {
	// Runs is how many containers each runtime starts (after one warm-up
	// each, which is not counted).
	Runs int
	// Runc also runs the containers with runc; without it only ember runs.
	Runc bool
	// Log, if not nil, receives a line per container.
	Log io.Writer
}

// Report holds the measured `ctr run --rm` times per runtime.
type Report struct {
	Runs    int                        `json:"runs"`
	Samples map[string][]time.Duration `json:"samples"`
	// FirstEmber is the first ember run, which builds the rootfs image
	// (cached after it).
	FirstEmber time.Duration `json:"first_ember"`
	Host       string        `json:"host"`
	Date       string        `json:"date"`
}

// Run starts containerd, imports a busybox image and times `ctr run --rm
// IMAGE ID echo hello` with each runtime, interleaved, checking every
// container's output and exit status. It leaves nothing behind.
func Run(ctx context.Context, p Paths, o Options) (*Report, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	c, err := start(ctx, p)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	rep := &Report{Runs: o.Runs, Samples: map[string][]time.Duration{}, Date: time.Now().UTC().Format("2006-01-02")}
	rep.Host, _ = os.Hostname()
	runtimes := []string{RuntimeEmber}
	if o.Runc {
		runtimes = append(runtimes, RuntimeRunc)
	}
	for i := -1; i < o.Runs; i++ {
		order := slices.Clone(runtimes)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, rt := range order {
			d, err := c.runOnce(ctx, rt, fmt.Sprintf("bench-%s-%d", shortName(rt), i+1), "hello")
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(o.Log, "ctrbench: %s run %d: %v\n", shortName(rt), i+1, d.Round(time.Millisecond))
			switch {
			case i >= 0:
				rep.Samples[rt] = append(rep.Samples[rt], d)
			case rt == RuntimeEmber:
				rep.FirstEmber = d
			}
		}
	}
	return rep, nil
}

// Demo runs one container in an ember microVM through containerd and
// writes what it printed, and how long `ctr run` took, to w.
func Demo(ctx context.Context, p Paths, w io.Writer, argv ...string) error {
	c, err := start(ctx, p)
	if err != nil {
		return err
	}
	defer c.stop()
	args := append([]string{"run", "--rm", "--runtime", RuntimeEmber, ImageName, "ember-demo"}, argv...)
	shown := make([]string, len(argv))
	for i, a := range argv {
		shown[i] = a
		if strings.ContainsAny(a, " $;'\"") {
			shown[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	fmt.Fprintf(w, "$ ctr run --rm --runtime %s %s ember-demo %s\n", RuntimeEmber, ImageName, strings.Join(shown, " "))
	r, err := c.ctr(ctx, "", args...)
	if err != nil {
		return err
	}
	fmt.Fprint(w, r.Stdout, r.Stderr)
	fmt.Fprintf(w, "(exit status %d; ctr run took %v, rootfs image built on first use)\n", r.Code, r.Took.Round(time.Millisecond))
	if r.Code != 0 {
		return fmt.Errorf("ctrbench: demo container exited with status %d\n%s", r.Code, c.logTail())
	}
	return nil
}

// start starts containerd and imports the busybox image.
func start(ctx context.Context, p Paths) (*containerd, error) {
	img, err := ociimage.Busybox(p.Busybox, ImageName)
	if err != nil {
		return nil, fmt.Errorf("ctrbench: image: %w", err)
	}
	c, err := startContainerd(ctx, p)
	if err != nil {
		return nil, err
	}
	if r, err := c.ctr(ctx, string(img), "images", "import", "-"); err != nil || r.Code != 0 {
		tail := c.logTail()
		c.stop()
		return nil, fmt.Errorf("%w: ctr images import: %v %s\n%s", ErrContainerd, err, r.Stderr, tail)
	}
	return c, nil
}

// runOnce runs `echo word` in a new container with runtime rt and checks
// its output.
func (c *containerd) runOnce(ctx context.Context, rt, id, word string) (time.Duration, error) {
	args := []string{"run", "--rm", "--runtime", rt}
	if rt == RuntimeRunc {
		// L1's root is an initramfs, where pivot_root fails.
		args = append(args, "--no-pivot")
	}
	r, err := c.ctr(ctx, "", append(args, ImageName, id, "echo", word)...)
	if err != nil {
		return 0, fmt.Errorf("ctrbench: ctr run (%s): %w", rt, err)
	}
	if r.Code != 0 || r.Stdout != word+"\n" {
		return 0, fmt.Errorf("ctrbench: ctr run (%s): exit %d, stdout %q, stderr %q\n%s", rt, r.Code, r.Stdout, r.Stderr, c.logTail())
	}
	return r.Took, nil
}

func shortName(rt string) string {
	if rt == RuntimeRunc {
		return "runc"
	}
	return "ember"
}
