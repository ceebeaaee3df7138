package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// DefaultSnaplen is the most bytes of a frame a capture keeps unless told
// otherwise: every frame whole, 64 KiB offloaded segments included.
const DefaultSnaplen = 262144

// PcapOptions configure a capture file.
type PcapOptions struct {
	// Snaplen is the most bytes kept of each frame (DefaultSnaplen if 0).
	Snaplen int
	// MaxSize, if positive, bounds a file's size in bytes: a frame that
	// would pass it starts a new file, the full one becoming PATH.1 (an
	// older PATH.1 becomes PATH.2, and so on).
	MaxSize int64
	// Keep is how many full files are kept beside the current one when
	// MaxSize rotates them (1 if 0); older ones are removed.
	Keep int
	// Flush is how often buffered frames are written out (a second if
	// 0); a live stream wants it short.
	Flush time.Duration
}

// Pcap is an Observer that writes every frame to a pcap file (Ethernet,
// nanosecond timestamps) that tcpdump, tshark and Wireshark read. Frames
// are buffered and reach the file once a second (PcapOptions.Flush) and
// on Close.
// A write error stops the capture (Err says why); frames keep flowing.
type Pcap struct {
	opts PcapOptions
	path string // "" for a writer that is not a file

	mu   sync.Mutex
	f    *os.File      // the current file, if path is set
	bw   *bufio.Writer // over f or the caller's writer
	size int64         // bytes in the current file
	err  error         // first write error: nothing more is written

	stop chan struct{}
	done chan struct{}
}

// NewPcap writes a capture to w (not closed by Close).
func NewPcap(w io.Writer, opts PcapOptions) (*Pcap, error) {
	p, err := newPcap("", opts)
	if err != nil {
		return nil, err
	}
	p.bw = bufio.NewWriterSize(w, 64<<10)
	if err := p.header(); err != nil {
		return nil, err
	}
	p.start()
	return p, nil
}

// CreatePcap writes a capture to the file at path, made anew.
func CreatePcap(path string, opts PcapOptions) (*Pcap, error) {
	p, err := newPcap(path, opts)
	if err != nil {
		return nil, err
	}
	if err := p.open(); err != nil {
		return nil, err
	}
	p.start()
	return p, nil
}

func newPcap(path string, opts PcapOptions) (*Pcap, error) {
	if opts.Snaplen == 0 {
		opts.Snaplen = DefaultSnaplen
	}
	if opts.Snaplen < 64 || opts.Snaplen > DefaultSnaplen {
		return nil, fmt.Errorf("pcap snaplen %d: want 64 to %d bytes", opts.Snaplen, DefaultSnaplen)
	}
	if opts.MaxSize < 0 || opts.Keep < 0 {
		return nil, errors.New("pcap size and file count must not be negative")
	}
	if opts.MaxSize > 0 && opts.MaxSize < 24+16+int64(opts.Snaplen) {
		return nil, fmt.Errorf("pcap size %d bytes: less than one frame of %d bytes", opts.MaxSize, opts.Snaplen)
	}
	if opts.Keep == 0 {
		opts.Keep = 1
	}
	if opts.Flush <= 0 {
		opts.Flush = time.Second
	}
	return &Pcap{opts: opts, path: path, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// open starts the file at path, with its header.
func (p *Pcap) open() error {
	f, err := os.OpenFile(p.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	p.f, p.size = f, 0
	p.bw = bufio.NewWriterSize(f, 64<<10)
	return p.header()
}

// header writes the pcap file header: nanosecond magic, version 2.4,
// the snaplen, LINKTYPE_ETHERNET.
func (p *Pcap) header() error {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b23c4d)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], uint32(p.opts.Snaplen))
	binary.LittleEndian.PutUint32(h[20:], 1)
	_, err := p.bw.Write(h[:])
	p.size += int64(len(h))
	if err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	return nil
}

// start runs the flusher, owned by the Pcap and stopped by Close.
func (p *Pcap) start() {
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.opts.Flush)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				if p.err == nil {
					p.fail(p.bw.Flush())
				}
				p.mu.Unlock()
			}
		}
	}()
}

func (p *Pcap) fail(err error) {
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("pcap: %w", err)
	}
}

// ObserveFrame writes one frame (Observer).
func (p *Pcap) ObserveFrame(_ Direction, frame []byte) {
	now := time.Now()
	kept := min(len(frame), p.opts.Snaplen)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || p.bw == nil {
		return
	}
	rec := int64(16 + kept)
	if p.path != "" && p.opts.MaxSize > 0 && p.size+rec > p.opts.MaxSize {
		p.fail(p.rotate())
		if p.err != nil {
			return
		}
	}
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(now.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(now.Nanosecond()))
	binary.LittleEndian.PutUint32(h[8:], uint32(kept))
	binary.LittleEndian.PutUint32(h[12:], uint32(len(frame)))
	_, err := p.bw.Write(h[:])
	if err == nil {
		_, err = p.bw.Write(frame[:kept])
	}
	p.size += rec
	p.fail(err)
}

// rotate closes the full file, shifts the kept ones and starts anew.
func (p *Pcap) rotate() error {
	if err := p.bw.Flush(); err != nil {
		return err
	}
	if err := p.f.Close(); err != nil {
		return err
	}
	os.Remove(fmt.Sprintf("%s.%d", p.path, p.opts.Keep))
	for i := p.opts.Keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", p.path, i), fmt.Sprintf("%s.%d", p.path, i+1))
	}
	if err := os.Rename(p.path, p.path+".1"); err != nil {
		return err
	}
	return p.open()
}

// Err is the error that stopped the capture, if any.
func (p *Pcap) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close flushes the capture and closes its file; frames observed after
// it are dropped. It returns the capture's first error.
func (p *Pcap) Close() error {
	p.mu.Lock()
	if p.bw == nil {
		p.mu.Unlock()
		return p.err
	}
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.fail(p.bw.Flush())
	}
	if p.f != nil {
		p.fail(p.f.Close())
	}
	p.bw, p.f = nil, nil
	return p.err
}
