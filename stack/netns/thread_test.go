package netns

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/tapstack/tapstack/internal/cienv"
)

// TestThreadComesBackFromAHalfwaySwitch: an operation that moves its
// thread into another namespace and then fails (as netns.NewNamed does
// when its bind mount fails) or panics must not hand that thread back to
// Go while it is still there: later goroutines would run in the wrong
// namespace.
func TestThreadComesBackFromAHalfwaySwitch(t *testing.T) {
	if os.Geteuid() != 0 {
		cienv.Skip(t, "netns: skipped: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	other, err := Create("tsth-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	home, err := netns.GetFromPid(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	for i := 0; i < 20; i++ {
		err := onThread(func() error {
			if err := netns.Set(other.handle); err != nil {
				return err
			}
			if i%2 == 0 {
				panic("half-way")
			}
			return errors.New("half-way")
		})
		if err == nil || !strings.Contains(err.Error(), "half-way") {
			t.Fatalf("onThread = %v, want the operation's error", err)
		}
	}
	// Every thread Go hands out now must be at home.
	var wg sync.WaitGroup
	var bad sync.Map
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := netns.Get()
			if err != nil {
				return
			}
			defer cur.Close()
			if !cur.Equal(home) {
				bad.Store(i, true)
			}
		}()
	}
	wg.Wait()
	n := 0
	bad.Range(func(any, any) bool { n++; return true })
	if n > 0 {
		t.Fatalf("%d goroutines ran on a thread left in another namespace", n)
	}
}
