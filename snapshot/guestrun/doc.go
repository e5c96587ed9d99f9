// Package guestrun creates snapshots of test guests and restores them, in
// this process or a fresh one, reporting what the restore cost. It is the
// common ground of the snapshot tests, `ember restore` and the snapshot
// benchmark. Test guests run natively at CPL3 on hosts whose KVM cannot run
// a guest kernel (see internal/testguest).
package guestrun
