package stack

import "gvisor.dev/gvisor/pkg/tcpip"

// tapstack runs on its patched copy of gVisor, third_party/gvisor (built by
// scripts/vendor-gvisor.sh from the pinned module and the fixes of
// third_party/gvisor-patches), which go.mod puts in place of the upstream
// module with "replace gvisor.dev/gvisor => ./third_party/gvisor". Go
// ignores the replace directives of a dependency, so a module that imports
// tapstack must copy that line into its own go.mod, pointing at the
// third_party/gvisor of a checkout of tapstack. Without it the build would
// take the unpatched upstream gVisor and quietly run without the fixes;
// this reference to a constant only the patched copy declares (patch 0009)
// makes that build fail instead, with
// "undefined: tcpip.TapstackRequiresReplaceGVisorWithThirdPartyGVisor".
const _ = tcpip.TapstackRequiresReplaceGVisorWithThirdPartyGVisor
