package main

import "testing"

func TestDaemonProcs(t *testing.T) {
	cases := []struct {
		flag int
		env  string
		cpus int
		want int
	}{
		{0, "", 2, 1},
		{0, "", 1, 1},
		{0, "", 8, 4},
		{0, "3", 8, 3},
		{0, "x", 8, 4},
		{0, "0", 8, 4},
		{2, "3", 8, 2},
	}
	for _, c := range cases {
		if got := daemonProcs(c.flag, c.env, c.cpus); got != c.want {
			t.Errorf("daemonProcs(%d, %q, %d) = %d, want %d", c.flag, c.env, c.cpus, got, c.want)
		}
	}
}
