package nstest_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// TestDownloadSurvivesABadNetwork is how a project tests its own client
// on a bad network: here the client is curl in the namespace and the
// server a Go HTTP server on the stack. The download must arrive whole
// under 5 % loss each way with 10 ms of delay and 2 % reordering, and
// again once the network is good.
func TestDownloadSurvivesABadNetwork(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	env.Impair("loss=5%,delay=10ms,reorder=2%")

	blob := make([]byte, 2<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	ln, err := sockets.Listen(env.Stack, "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, network := range []string{"bad", "off"} {
		if network == "off" {
			env.Impair("off")
		}
		got := env.MustRun(60*time.Second, nil, "sh", "-c", "curl -sS --max-time 50 http://10.0.2.2:8080/ | sha256sum")
		if f := strings.Fields(got); len(f) == 0 || f[0] != hex.EncodeToString(sum[:]) {
			t.Fatalf("%s network: the download's SHA-256 is %q, want %x", network, got, sum)
		}
	}
	_, _, in, out, _ := env.Impairment()
	if in.Dropped == 0 || out.Dropped == 0 {
		t.Fatalf("the bad network lost nothing: in %+v, out %+v", in, out)
	}
	t.Logf("lost %d of %d frames in, %d of %d out", in.Dropped, in.Frames, out.Dropped, out.Frames)
}
