package stack_test

// A test of what this module's build changes in gVisor's buffers
// (third_party/gvisor-patches/0008): a chunk taken from a pool is no
// longer cleared whole; the bytes a view exposes without their being
// written (View.Grow, NewViewSize, Buffer.GrowTo) are cleared instead.

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
)

// dirtyPools releases chunks of every pooled size, each filled with 0xa5,
// so that the next views of those sizes reuse a previous user's memory.
func dirtyPools() {
	for size := 64; size <= buffer.MaxChunkSize; size *= 2 {
		var vs []*buffer.View
		for range 8 {
			vs = append(vs, buffer.NewViewWithData(bytes.Repeat([]byte{0xa5}, size)))
		}
		for _, v := range vs {
			v.Release()
		}
	}
}

// TestExposedBytesAreZero checks every way a view shows bytes that
// nothing wrote: a previous user's data must never show.
func TestExposedBytesAreZero(t *testing.T) {
	for _, size := range []int{1, 60, 64, 1500, 4096, 65535, buffer.MaxChunkSize} {
		dirtyPools()
		v := buffer.NewViewSize(size)
		if i := bytes.IndexFunc(v.AsSlice(), func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("NewViewSize(%d): byte %d is not zero", size, i)
		}
		v.Release()

		dirtyPools()
		v = buffer.NewView(size)
		v.Write([]byte{1})
		v.Grow(size - 1)
		if i := bytes.IndexFunc(v.AsSlice()[1:], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("NewView(%d) written 1 byte then grown: byte %d is not zero", size, i+1)
		}
		v.Release()

		dirtyPools()
		var b buffer.Buffer
		b.Append(buffer.NewViewWithData([]byte{1}))
		b.GrowTo(int64(size)+1, false)
		flat := b.Flatten()
		if i := bytes.IndexFunc(flat[1:], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("Buffer.GrowTo(%d, false): byte %d is not zero", size+1, i+1)
		}
		b.Release()
	}
}

// BenchmarkSegmentView is what a TCP write does per 64 KiB segment: take
// a view from the pool and fill it. A chunk was cleared whole when taken.
func BenchmarkSegmentView(b *testing.B) {
	data := bytes.Repeat([]byte{1}, buffer.MaxChunkSize)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		v := buffer.NewView(len(data))
		v.Write(data)
		v.Release()
	}
}
