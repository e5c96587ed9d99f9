package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embervm/ember/internal/fixtures"
)

var vmmBin, emberBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ember-vmm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vmmBin, emberBin = filepath.Join(dir, "ember-vmm"), filepath.Join(dir, "ember")
	for pkg, dst := range map[string]string{"./cmd/ember-vmm": vmmBin, "./cmd/ember": emberBin} {
		if err := fixtures.GoBuild(context.Background(), pkg, dst); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// flagsOf is the part of a help text after its "Flags:" line.
func flagsOf(t *testing.T, help string) string {
	t.Helper()
	_, flags, ok := strings.Cut(help, "\nFlags:\n")
	if !ok || !strings.Contains(flags, "-api-sock") {
		t.Fatalf("help text without ember vmm's flags:\n%s", help)
	}
	return flags
}

// TestHelp: ember-vmm's help, with or without the leading "vmm", exits 0
// and lists exactly ember vmm's flags.
func TestHelp(t *testing.T) {
	out, err := exec.Command(emberBin, "vmm", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("ember vmm --help: %v\n%s", err, out)
	}
	want := flagsOf(t, string(out))
	for _, args := range [][]string{{"--help"}, {"vmm", "--help"}, {"-h"}, {"vmm", "-h"}} {
		out, err := exec.Command(vmmBin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("ember-vmm %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		if !strings.HasPrefix(string(out), "Usage: ember-vmm [vmm] [flags]\n") {
			t.Errorf("ember-vmm %s: usage line:\n%s", strings.Join(args, " "), out)
		}
		if got := flagsOf(t, string(out)); got != want {
			t.Errorf("ember-vmm %s lists other flags than ember vmm --help:\n%s\nwant:\n%s", strings.Join(args, " "), got, want)
		}
	}
}

// TestBadArgs: what ember vmm refuses, ember-vmm refuses, with exit
// status 1.
func TestBadArgs(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--api-sock is required"},
		{[]string{"vmm"}, "--api-sock is required"},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
		// A second "vmm" is an argument, as in ember vmm vmm: the flags
		// stop there.
		{[]string{"vmm", "vmm", "--api-sock", "x"}, "--api-sock is required"},
	} {
		out, err := exec.Command(vmmBin, tt.args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("ember-vmm %q: %v, want exit status 1\n%s", tt.args, err, out)
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("ember-vmm %q says %q, want %q", tt.args, out, tt.want)
		}
	}
}

// TestLean: ember-vmm links none of the ember CLI's other commands (nor
// what only they import): that is what it is for.
func TestLean(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./cmd/ember-vmm")
	cmd.Dir = fixtures.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/embervm/ember/"
	for _, pkg := range strings.Fields(string(out)) {
		for _, not := range []string{
			mod + "internal/lab", mod + "internal/ociimage", mod + "internal/hostcheck",
			mod + "internal/e2e", mod + "internal/fixtures", mod + "pool", mod + "benchmarks",
			mod + "images", mod + "shim", mod + "guest/agent", mod + "cmd/ember",
			"github.com/containerd/containerd", "github.com/opencontainers", "regexp",
		} {
			if pkg == not || strings.HasPrefix(pkg, strings.TrimSuffix(not, "/")+"/") {
				t.Errorf("ember-vmm links %s", pkg)
			}
		}
	}
}
