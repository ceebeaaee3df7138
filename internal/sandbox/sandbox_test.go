package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// The restrictions cannot be undone, so each test runs them in a child:
// this test binary started again with childEnv naming what to do.
const childEnv = "TAPSTACK_SANDBOX_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(child(what))
	}
	os.Exit(m.Run())
}

// child applies a restriction and reports, one line per probe, what the
// process can still do.
func child(what string) int {
	secret := os.Getenv("SECRET_FILE")
	switch what {
	case "restrict":
		if _, err := Restrict("/etc"); err != nil {
			fmt.Println("restrict:", err)
			return 2
		}
		_, err := os.ReadFile(secret)
		fmt.Println("read outside:", errno(err))
		_, err = os.ReadFile("/etc/hostname")
		fmt.Println("read /etc:", errno(err))
		err = os.WriteFile("/etc/tapstack-sandbox-probe", []byte("x"), 0o600)
		fmt.Println("write /etc:", errno(err))
		err = os.WriteFile(filepath.Join(filepath.Dir(secret), "new"), []byte("x"), 0o600)
		fmt.Println("write outside:", errno(err))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			c, derr := net.Dial("tcp", ln.Addr().String())
			if derr == nil {
				c.Close()
			}
			err = derr
			ln.Close()
		}
		fmt.Println("tcp:", errno(err))
		status, _ := os.ReadFile("/proc/self/status")
		fmt.Println("proc:", len(status) > 0)
		_, err = exec.Command("/bin/true").CombinedOutput()
		fmt.Println("exec:", errno(err))
		fmt.Printf("caps: %q\n", cap.GetProc().String())
		nb, _ := cap.GetBound(cap.NET_BIND_SERVICE)
		admin, _ := cap.GetBound(cap.SYS_ADMIN)
		fmt.Println("bound:", nb, admin)
	case "seccomp":
		if _, err := Seccomp(); err != nil {
			fmt.Println("seccomp:", err)
			return 2
		}
		err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
		fmt.Println("prctl:", errno(err))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ln.Close()
		}
		fmt.Println("tcp:", errno(err))
		_, err = os.ReadFile(secret)
		fmt.Println("read:", errno(err))
		os.Stdout.Sync()
		// Killed here.
		err = exec.Command("/bin/true").Run()
		fmt.Println("exec survived:", err)
	}
	return 0
}

func errno(err error) string {
	var e syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &e):
		return e.Error()
	}
	return err.Error()
}

// runChild runs the test binary as a child doing what, and returns its
// output and how it ended.
func runChild(t *testing.T, what string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+what, "SECRET_FILE="+secret)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRestrictLeavesOnlyEtcReadable(t *testing.T) {
	if _, err := landlockABI(); err != nil {
		t.Skipf("this kernel has no Landlock: %v", err)
	}
	out, err := runChild(t, "restrict")
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{
		"read outside: permission denied",
		"read /etc: ok",
		"write /etc: permission denied",
		"write outside: permission denied",
		"tcp: ok",
		// /proc is outside too: a restricted daemon cannot read other
		// processes' memory maps or environments.
		"proc: false",
		"exec: permission denied",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in the child's report:\n%s", want, out)
		}
	}
	if os.Geteuid() == 0 {
		// Root keeps only the right to bind ports below 1024.
		for _, want := range []string{`caps: "cap_net_bind_service=eip"`, "bound: true false"} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("want %q in the child's report:\n%s", want, out)
			}
		}
	}
}

func TestSeccompKillsOnExec(t *testing.T) {
	out, err := runChild(t, "seccomp")
	for _, want := range []string{"prctl: operation not permitted", "tcp: ok", "read: ok"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in the child's report:\n%s", want, out)
		}
	}
	if strings.Contains(out, "exec survived") {
		t.Fatalf("the child could run a program under the filter:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("child ended with %v, want killed by SIGSYS\n%s", ee, out)
	}
}
