package virtio

// ParseChain exposes parseChain to the external tests.
var ParseChain = parseChain
