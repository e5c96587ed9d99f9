package lab

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestPrepareKernelConcurrent fills an empty cache from several goroutines
// at once (each takes the flock through its own file, as separate processes
// would): all get the same complete kernel, and no temporary files remain.
func TestPrepareKernelConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the kernel package (27 MB) into a fresh cache")
	}
	t.Parallel()
	cache := t.TempDir()
	const n = 3
	var wg sync.WaitGroup
	dirs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := PrepareKernel(context.Background(), cache, DefaultKernelPackage)
			errs[i] = err
			if err == nil {
				dirs[i] = k.Dir
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if dirs[i] != dirs[0] {
			t.Fatalf("callers got %q and %q", dirs[0], dirs[i])
		}
	}
	if _, err := os.Stat(filepath.Join(dirs[0], "lib", "modules")); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(cache, "kernel", ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left in the cache: %v", left)
	}
}
