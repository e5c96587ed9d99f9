package task

import (
	"strings"

	"github.com/containerd/containerd/api/types"
)

type typesMount = types.Mount

func cut(s string) (string, string, bool) { return strings.Cut(s, "|") }
