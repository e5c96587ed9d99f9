package network

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ingressHandle is the ingress qdisc's handle (ffff:).
var ingressHandle = netlink.MakeHandle(0xffff, 0)

// Connect joins the pod's CNI interface and the VM's TAP (both in the
// namespace at p.NetNS) with two tc redirects: what arrives on one leaves
// through the other, so the guest sits on the CNI network in the CNI
// interface's place.
func Connect(p *Pod, tap string) error {
	h, err := handleAt(p.NetNS)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(p.Link)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrRedirect, p.Link, err)
	}
	t, err := h.LinkByName(tap)
	if err != nil {
		return fmt.Errorf("%w: TAP %s: %w", ErrRedirect, tap, err)
	}
	if err := redirect(h, link, t); err != nil {
		return err
	}
	if err := redirect(h, t, link); err != nil {
		_ = unredirect(h, link)
		return err
	}
	return nil
}

// redirect sends every frame arriving on from out through to.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	idx := from.Attrs().Index
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	// An ingress qdisc left by a crashed shim (with its redirect to a TAP
	// that is gone) goes first.
	if err := unredirect(h, from); err != nil {
		return err
	}
	if err := h.QdiscAdd(q); err != nil {
		return fmt.Errorf("%w: ingress qdisc on %s: %w", ErrRedirect, from.Attrs().Name, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: ingressHandle, Priority: 1, Protocol: unix.ETH_P_ALL},
		// No selector: u32 matches every frame.
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := h.FilterAdd(f); err != nil {
		_ = h.QdiscDel(q)
		return fmt.Errorf("%w: %s -> %s: %w", ErrRedirect, from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

// unredirect removes link's ingress qdisc, and with it the redirect.
func unredirect(h *netlink.Handle, link netlink.Link) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%w: remove ingress qdisc of %s: %w", ErrRedirect, link.Attrs().Name, err)
	}
	return nil
}

// Disconnect removes the redirect from the pod's CNI interface (the TAP's
// goes with the TAP when the VMM exits). A namespace or interface that is
// already gone (CNI DEL ran) is not an error.
func Disconnect(p *Pod) error {
	h, err := handleAt(p.NetNS)
	if err != nil {
		return nil // namespace gone: nothing left to remove
	}
	defer h.Close()
	link, err := h.LinkByName(p.Link)
	if err != nil {
		return nil
	}
	return unredirect(h, link)
}
