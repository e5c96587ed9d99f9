package snapshot

// SetBeforeStateHook installs a hook Save calls after committing the
// memory file and before writing the state file; an error from it fails
// the save there, as a crash would.
func SetBeforeStateHook(f func() error) (restore func()) {
	old := beforeStateHook
	beforeStateHook = f
	return func() { beforeStateHook = old }
}
