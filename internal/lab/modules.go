package lab

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// module is a loadable kernel module file.
type module struct {
	name string // canonical name: file base name, '-' replaced by '_'
	rel  string // path relative to the kernel's modules directory
}

// moduleName canonicalizes a module name or path: kvm-amd, kvm_amd.ko and
// kernel/arch/x86/kvm/kvm-amd.ko all give kvm_amd.
func moduleName(s string) string {
	s = filepath.Base(s)
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// resolveModules returns the modules that must be loaded, dependencies
// first, for the requested names. Debian's package ships no modules.dep (it
// is generated at install), so dependencies are read from each module's
// .modinfo section. Built-in modules are skipped; missing optional ones too.
func resolveModules(k *Kernel, names []string, optional map[string]bool) ([]module, error) {
	index := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.ModulesDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(k.ModulesDir, p)
			index[moduleName(p)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: index %s: %w", ErrModule, k.ModulesDir, err)
	}
	builtin := k.builtinModules()
	var order []module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("%w: dependency cycle %s", ErrModule, strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		rel, ok := index[name]
		if !ok {
			if builtin[name] || (len(chain) == 0 && optional[name]) {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("%w: %s in kernel %s (needed by %v)", ErrModule, name, k.Release, chain)
		}
		state[name] = 1
		deps, err := moduleDepends(filepath.Join(k.ModulesDir, rel))
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, module{name: name, rel: rel})
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads the depends= entry of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModule, path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%w: %s has no .modinfo", ErrModule, path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModule, path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, moduleName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}
