// Package network connects a pod's CNI network to its microVM, the way
// Kata's "tcfilter" model does: CNI (run by containerd, ctr --cni or the
// CRI plugin) leaves an interface such as eth0 in the pod's network
// namespace; the VMM creates a TAP device in that namespace; two tc
// mirred redirects pass every frame arriving on one to the other; and the
// guest's virtio-net interface takes over the CNI interface's MAC,
// addresses and routes through the agent.
//
// Discover reads the CNI interface, Connect and Disconnect manage the
// redirects, and Pod.Request is the agent's ConfigureNetwork request.
package network
