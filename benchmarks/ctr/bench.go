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

// Sources of ember VMs the benchmark can compare (the shim's backends;
// SourcePool in pool.go).
const (
	SourceBoot    = "boot"
	SourceRestore = "restore"
)

// Options configure Run.
type Options struct {
	// Runs is how many containers each variant starts (after one warm-up
	// each, which is not counted).
	Runs int
	// Sources are the ember VM sources to time (default: boot). Restore
	// and pool first write a snapshot profile (a booted agent VM with spare
	// drive slots) with ember snapshot create; pool then serves VMs
	// restored from it with ember pool serve.
	Sources []string
	// Runc also runs the containers with runc.
	Runc bool
	// Log, if not nil, receives a line per container.
	Log io.Writer
}

// variant is one way of running the container: a runtime and, for ember,
// the source of its VM.
type variant struct{ runtime, source string }

// Label names the variant in reports: "runc", "ember boot", ...
func (v variant) Label() string {
	if v.runtime == RuntimeRunc {
		return "runc"
	}
	return "ember " + v.source
}

// Report holds the measured `ctr run --rm` times per variant label.
type Report struct {
	Runs    int                        `json:"runs"`
	Samples map[string][]time.Duration `json:"samples"`
	// Labels are the variants in the order they were run.
	Labels []string `json:"labels"`
	// First is each variant's warm-up run (ember's first also builds the
	// container's rootfs image, cached after it).
	First map[string]time.Duration `json:"first"`
	// Profile is how long writing the restore source's snapshot profile
	// took (not part of any sample).
	Profile time.Duration `json:"profile"`
	Host    string        `json:"host"`
	Date    string        `json:"date"`
	// Notes say how variants were set up.
	Notes []string `json:"notes,omitempty"`
}

// Run starts containerd, imports a busybox image and times `ctr run --rm
// IMAGE ID echo hello` with each variant, interleaved (the order rotates
// every round), checking every container's output and exit status and
// that the shim's VM came from the intended source. It leaves nothing
// behind.
func Run(ctx context.Context, p Paths, o Options) (*Report, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Sources) == 0 {
		o.Sources = []string{SourceBoot}
	}
	var vs []variant
	for _, src := range o.Sources {
		if src != SourceBoot && src != SourceRestore && src != SourcePool {
			return nil, fmt.Errorf("ctrbench: unknown source %q (boot, restore or pool)", src)
		}
		vs = append(vs, variant{RuntimeEmber, src})
	}
	if o.Runc {
		vs = append(vs, variant{runtime: RuntimeRunc})
	}
	c, err := start(ctx, p)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	rep := &Report{Runs: o.Runs, Samples: map[string][]time.Duration{}, First: map[string]time.Duration{},
		Date: time.Now().UTC().Format("2006-01-02")}
	rep.Host, _ = os.Hostname()
	for _, v := range vs {
		rep.Labels = append(rep.Labels, v.Label())
	}
	if slices.Contains(o.Sources, SourceRestore) || slices.Contains(o.Sources, SourcePool) {
		t := time.Now()
		if err := c.writeProfile(ctx, p); err != nil {
			return nil, err
		}
		rep.Profile = time.Since(t)
		fmt.Fprintf(o.Log, "ctrbench: snapshot profile written in %v\n", rep.Profile.Round(time.Millisecond))
	}
	if slices.Contains(o.Sources, SourcePool) {
		if c.pool, err = startPool(ctx, p, c.root, c.profile); err != nil {
			return nil, err
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("ember pool: each sample claims from a full `ember pool serve` of one VM restored from the same profile; the claimed VM's replacement starts %v later (the lab has one vCPU) and is not timed.", poolRefillDelay))
	}
	for i := -1; i < o.Runs; i++ {
		order := slices.Clone(vs)
		if i >= 0 {
			k := i % len(order)
			order = append(order[k:], order[:k]...)
		}
		for _, v := range order {
			d, err := c.runOnce(ctx, v, fmt.Sprintf("bench-%s-%d", strings.ReplaceAll(v.Label(), " ", "-"), i+1), "hello")
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(o.Log, "ctrbench: %s run %d: %v\n", v.Label(), i+1, d.Round(time.Millisecond))
			if i >= 0 {
				rep.Samples[v.Label()] = append(rep.Samples[v.Label()], d)
			} else {
				rep.First[v.Label()] = d
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

// runOnce runs `echo word` in a new container as variant v and checks its
// output and, for ember, that the shim's log names v's source.
func (c *containerd) runOnce(ctx context.Context, v variant, id, word string) (time.Duration, error) {
	args := []string{"run", "--rm", "--runtime", v.runtime}
	served := ""
	if v.runtime == RuntimeRunc {
		// L1's root is an initramfs, where pivot_root fails.
		args = append(args, "--no-pivot")
	} else {
		// Each container's shim reads the configuration when it starts.
		if err := c.configure(v.source); err != nil {
			return 0, err
		}
		if v.source == SourcePool {
			// Claims from a full pool: its refill is not timed.
			if err := c.pool.waitFull(ctx); err != nil {
				return 0, err
			}
		}
		served = "served by " + v.source
	}
	before := c.served(v.source)
	r, err := c.ctr(ctx, "", append(args, ImageName, id, "echo", word)...)
	if err != nil {
		return 0, fmt.Errorf("ctrbench: ctr run (%s): %w", v.Label(), err)
	}
	if r.Code != 0 || r.Stdout != word+"\n" {
		return 0, fmt.Errorf("ctrbench: ctr run (%s): exit %d, stdout %q, stderr %q\n%s", v.Label(), r.Code, r.Stdout, r.Stderr, c.logTail())
	}
	if served != "" && c.served(v.source) <= before {
		return 0, fmt.Errorf("ctrbench: ctr run (%s): the shim's log does not say %q\n%s", v.Label(), served, c.logTail())
	}
	return r.Took, nil
}
