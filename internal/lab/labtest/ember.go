package labtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/embervm/ember/internal/lab"
)

// EmberEnv names an environment variable holding the path of a prebuilt
// static ember binary; when set, BuildEmber uses it instead of building.
const EmberEnv = "EMBER_LAB_EMBER"

// EmberPackage is the import path of the ember command.
const EmberPackage = "github.com/embervm/ember/cmd/ember"

// BuildEmber returns a static ember binary for L1: the file named by
// $EMBER_LAB_EMBER, or one built with "go build" (CGO_ENABLED=0) into dir.
// It needs the go command, which "go test" puts first on PATH.
func BuildEmber(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv(EmberEnv); p != "" {
		if err := lab.CheckStatic(p); err != nil {
			return "", fmt.Errorf("labtest: $%s: %w", EmberEnv, err)
		}
		return p, nil
	}
	out := filepath.Join(dir, "ember")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, EmberPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("labtest: go build %s: %w\n%s", EmberPackage, err, stderr.Bytes())
	}
	if err := lab.CheckStatic(out); err != nil {
		return "", fmt.Errorf("labtest: %w", err)
	}
	return out, nil
}
