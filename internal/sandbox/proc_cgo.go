//go:build cgo

package sandbox

// keepProc: built with cgo, libcap's psx is its C version, which reads
// /proc/self/task to reach every thread; the sandbox's root keeps a
// read-only /proc for it (Landlock then closes it to the daemon).
const keepProc = true
