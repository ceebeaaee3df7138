package link

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapstack/tapstack/internal/cienv"
)

// udpFrame is an Ethernet frame of an IPv4 UDP datagram from
// 10.0.0.1:1234 to 10.0.0.2:5678 carrying payload.
func udpFrame(payload []byte) []byte {
	f := make([]byte, 14+20+8, 14+20+8+len(payload))
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 1})
	f[12], f[13] = 0x08, 0x00
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], []byte{10, 0, 0, 1})
	copy(ip[16:20], []byte{10, 0, 0, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 1234)
	binary.BigEndian.PutUint16(udp[2:], 5678)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(f, payload...)
}

func TestPcapReadByTcpdump(t *testing.T) {
	cienv.RequireTool(t, "tcpdump")
	path := filepath.Join(t.TempDir(), "x.pcap")
	p, err := CreatePcap(path, PcapOptions{Snaplen: 100})
	if err != nil {
		t.Fatal(err)
	}
	p.ObserveFrame(Outbound, udpFrame([]byte("hello")))
	p.ObserveFrame(Inbound, udpFrame(bytes.Repeat([]byte("x"), 1000)))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tcpdump", "-nn", "-r", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var frames []string
	for _, l := range lines {
		if strings.Contains(l, " IP ") {
			frames = append(frames, l)
		} else if !strings.HasPrefix(l, "reading from file") {
			t.Errorf("tcpdump warned: %q", l)
		}
	}
	if len(frames) != 2 || !strings.Contains(frames[0], "10.0.0.1.1234 > 10.0.0.2.5678: UDP, length 5") ||
		!strings.Contains(frames[1], "UDP, length 1000") {
		t.Fatalf("tcpdump read:\n%s", out)
	}
	// The long frame was cut at the snaplen, its length kept.
	b, _ := os.ReadFile(path)
	second := 24 + 16 + len(udpFrame([]byte("hello")))
	if incl, orig := binary.LittleEndian.Uint32(b[second+8:]), binary.LittleEndian.Uint32(b[second+12:]); incl != 100 || orig != 1042 {
		t.Fatalf("second record: %d bytes kept of %d, want 100 of 1042", incl, orig)
	}
}

func TestPcapRotatesAndKeepsTheLastFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	p, err := CreatePcap(path, PcapOptions{Snaplen: 200, MaxSize: 1000, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	frame := udpFrame(bytes.Repeat([]byte("y"), 100)) // 142 bytes, a 158-byte record
	for i := 0; i < 40; i++ {
		p.ObserveFrame(Outbound, frame)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// 6 records fit a file of 1000 bytes (24 + 6 × 158 = 972): 40 frames
	// make 7 files (the last with 4), of which the current one and the 2
	// before it remain.
	for name, records := range map[string]int{path: 4, path + ".1": 6, path + ".2": 6} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 24+records*158 || binary.LittleEndian.Uint32(b) != 0xa1b23c4d {
			t.Fatalf("%s: %d bytes, magic %x", name, len(b), b[:4])
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Fatalf("%s.3 is kept: %v", path, err)
	}
}

func TestPcapBadOptions(t *testing.T) {
	for _, o := range []PcapOptions{{Snaplen: 10}, {Snaplen: 1 << 20}, {MaxSize: -1}, {Keep: -1}, {MaxSize: 100}} {
		if _, err := CreatePcap(filepath.Join(t.TempDir(), "x.pcap"), o); err == nil {
			t.Errorf("CreatePcap with %+v accepted", o)
		}
	}
	if _, err := CreatePcap(filepath.Join(t.TempDir(), "no", "such", "dir.pcap"), PcapOptions{}); err == nil {
		t.Error("CreatePcap in a missing folder accepted")
	}
}
