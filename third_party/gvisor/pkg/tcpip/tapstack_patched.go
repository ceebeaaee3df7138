package tcpip

// TapstackRequiresReplaceGVisorWithThirdPartyGVisor marks this gVisor as
// tapstack's patched copy: third_party/gvisor of tapstack's repository,
// built by scripts/vendor-gvisor.sh with the patches of
// third_party/gvisor-patches. Package github.com/tapstack/tapstack/stack
// refers to it, so that a build against the unpatched upstream module
// fails with "undefined: tcpip.TapstackRequiresReplaceGVisorWithThirdPartyGVisor"
// instead of running without the fixes. A module that imports tapstack
// needs "replace gvisor.dev/gvisor => <tapstack checkout>/third_party/gvisor"
// in its own go.mod: Go ignores the replace directives of a dependency.
const TapstackRequiresReplaceGVisorWithThirdPartyGVisor = true
