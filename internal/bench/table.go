package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// lowerIsBetter tells how to pick the best peer for a unit.
func lowerIsBetter(unit string) bool {
	switch unit {
	case "µs", "%", "s/GB", "MiB":
		return true
	}
	return false
}

// WriteTable prints the report as a Markdown table: one row per case, one
// column per path, then tapstack's ratios to the kernel and to the best
// peer measured in the same run, and to the baseline build when there is
// one.
func (rep *Report) WriteTable(w io.Writer) {
	var cases []string
	unit := map[string]string{}
	val := map[[2]string]string{}
	num := map[[2]string]float64{}
	for _, r := range rep.Results {
		if _, ok := unit[r.Case]; !ok {
			cases = append(cases, r.Case)
			unit[r.Case] = r.Unit
		}
		k := [2]string{r.Case, r.Path}
		if r.Err != "" {
			val[k] = "fail"
			continue
		}
		val[k] = fmt.Sprintf("%.2f", r.Value)
		num[k] = r.Value
	}
	var peers []string
	for _, p := range rep.Paths {
		if p == "slirp4netns" || p == "pasta" {
			peers = append(peers, p)
		}
	}
	off := ""
	if rep.Offload {
		off = ", tapstack TAPs with offloads"
	}
	fmt.Fprintf(w, "MTU %d%s, %d transmit queue(s), %s per throughput case\n\n", rep.MTU, off, rep.TxQueues, rep.Duration)
	baseline := slices.Contains(rep.Paths, "baseline sockets") || slices.Contains(rep.Paths, "baseline relay")
	flow := slices.Contains(rep.Paths, "tapstack flow relay")
	hdr := "| case | unit | " + strings.Join(rep.Paths, " | ") + " | sockets ÷ kernel | relay ÷ kernel | relay ÷ best peer |"
	cols := 5 + len(rep.Paths)
	if flow {
		hdr += " flow ÷ best peer | flow ÷ relay |"
		cols += 2
	}
	if baseline {
		hdr += " sockets ÷ baseline | relay ÷ baseline |"
		cols += 2
	}
	fmt.Fprintln(w, hdr)
	fmt.Fprintln(w, "|"+strings.Repeat("---|", cols))
	ratio := func(c, a, b string) string {
		x, ok1 := num[[2]string{c, a}]
		y, ok2 := num[[2]string{c, b}]
		if !ok1 || !ok2 || y == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x/y)
	}
	for _, c := range cases {
		row := []string{c, unit[c]}
		for _, p := range rep.Paths {
			v := val[[2]string{c, p}]
			if v == "" {
				v = "-"
			}
			row = append(row, v)
		}
		best := ""
		for _, p := range peers {
			v, ok := num[[2]string{c, p}]
			if !ok {
				continue
			}
			b, have := num[[2]string{c, best}]
			if best == "" || !have || (lowerIsBetter(unit[c]) && v < b) || (!lowerIsBetter(unit[c]) && v > b) {
				best = p
			}
		}
		bestRatio, flowBest := "-", "-"
		if best != "" {
			bestRatio = ratio(c, "tapstack relay", best) + " (" + best + ")"
			flowBest = ratio(c, "tapstack flow relay", best) + " (" + best + ")"
		}
		row = append(row, ratio(c, "tapstack sockets", "kernel veth"), ratio(c, "tapstack relay", "kernel veth"), bestRatio)
		if flow {
			row = append(row, flowBest, ratio(c, "tapstack flow relay", "tapstack relay"))
		}
		if baseline {
			row = append(row, ratio(c, "tapstack sockets", "baseline sockets"), ratio(c, "tapstack relay", "baseline relay"))
		}
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
	fmt.Fprintln(w, "\nµs, %, s/GB and MiB: lower is better. CPU and RSS are those of tapstack's daemon and of the slirp4netns and pasta processes; \"kernel veth\" has no process to weigh.")
}
