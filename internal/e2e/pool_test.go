package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
	"github.com/embervm/ember/pool"
	vmmapi "github.com/embervm/ember/vmm/api"
)

// TestNativePoolOfLinuxVMs keeps restored Linux VMs (agent idle in the
// snapshot) in a warm pool and claims them: each claim hands over a VM that
// runs, whose agent already took the claim's identity (clock, entropy,
// Ready), and that runs a container. It compares claim-to-running from the
// pool with a cold restore in the same run.
func TestNativePoolOfLinuxVMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	snapDir := snapshotIdleAgent(t, ctx, dir)

	ember := lab.GuestEmber
	if !labtest.InLab() {
		ember = filepath.Join(dir, "ember")
		if err := fixtures.GoBuild(ctx, "./cmd/ember", ember); err != nil {
			t.Fatal(err)
		}
	}
	profile := pool.Profile{Name: "linux", MemoryMiB: 256,
		VMMArgs: []string{"--restore", snapDir, "--backend", "mmap"}}
	claim := func(size int) (*pool.Claim, *pool.Manager) {
		t.Helper()
		p := profile
		p.Size = size
		m, err := pool.New(pool.Config{Ember: ember, RunDir: filepath.Join(dir, "run", p.Name+time.Now().Format("150405.000")),
			StartTimeout: pool.Duration(2 * time.Minute), RefillDelay: pool.Duration(time.Minute),
			Profiles: []pool.Profile{p}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		deadline := time.Now().Add(2 * time.Minute)
		for m.Status()[0].Ready < size {
			if time.Now().After(deadline) {
				t.Fatalf("pool never got ready: %+v", m.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl, err := m.Claim(ctx, "linux", pool.ClaimOptions{Resume: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			vc := vmmapi.NewClient(cl.Socket)
			vc.Action(context.Background(), vmmapi.ActionStop)
			vc.Close()
		})
		return cl, m
	}

	// Cold first: the first restored VM in L1 also pays for first touches
	// of the snapshot's pages in L1's page cache, which the later one
	// does not.
	cold, _ := claim(0)
	if cold.Source != "cold" {
		t.Fatalf("claim came from %s", cold.Source)
	}
	warm, _ := claim(1)
	if warm.Source != "pool" {
		t.Fatalf("claim came from %s", warm.Source)
	}
	t.Logf("LAB-FIGURE claim-to-running with identity applied by the agent: pool %v, cold restore %v (%.1fx)",
		warm.Total.Round(time.Millisecond), cold.Total.Round(time.Millisecond), float64(cold.Total)/float64(warm.Total))
	if warm.Identity.Nonce == cold.Identity.Nonce || warm.Identity.MAC == cold.Identity.MAC {
		t.Error("two claims share an identity")
	}

	for _, cl := range []*pool.Claim{warm, cold} {
		if cl.Vsock != cl.Socket+".vsock" {
			t.Errorf("claimed VM %s: vsock socket %q, want %q", cl.ID, cl.Vsock, cl.Socket+".vsock")
		}
		ac, err := client.Dial(ctx, cl.Vsock, api.DefaultVsockPort)
		if err != nil {
			t.Fatalf("claimed VM %s: %v", cl.ID, err)
		}
		// The claim's identity already called Ready once.
		rd, err := ac.Ready(ctx, &api.ReadyRequest{VmId: cl.ID})
		if err != nil || rd.Generation != 2 {
			t.Errorf("claimed VM %s: Ready %v, %v; want generation 2 (the identity's Ready first)", cl.ID, rd, err)
		}
		rootfs := &api.Rootfs{Source: "/dev/vda", Fstype: "ext4", Readonly: true}
		if out, code := runContainer(t, ctx, ac, "pooled", rootfs, "echo", "pooled"); out != "pooled\n" || code != 0 {
			t.Errorf("claimed VM %s: container printed %q, exit %d", cl.ID, out, code)
		}
		ac.Close()
	}
}
