//go:build !cgo

package sandbox

// keepProc: built without cgo, psx reaches every thread through the Go
// runtime, and the sandbox's root needs no /proc.
const keepProc = false
