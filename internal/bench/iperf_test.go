package bench

import (
	"encoding/json"
	"math"
	"testing"
)

// TestUDPReceivedIsTheServers: a UDP test's rate is what the server
// received, not what the client sent ("sum" is the sender's), and comes
// from the sender's rate and the loss where "sum_received" is missing.
func TestUDPReceivedIsTheServers(t *testing.T) {
	for _, c := range []struct {
		name, json string
		want       float64
	}{
		{"iperf3 3.12", `{"end":{"sum":{"bytes":579432000,"bits_per_second":2317653835.08,"lost_packets":26641,"packets":413880,"lost_percent":6.44,"sender":true},
			"sum_sent":{"bytes":579432000,"bits_per_second":2317653835.08,"sender":true},
			"sum_received":{"bytes":542047800,"bits_per_second":2168018842.5,"sender":false}}}`, 2168018842.5},
		{"without sum_received", `{"end":{"sum":{"bytes":1000,"bits_per_second":1e9,"lost_percent":75}}}`, 0.25e9},
	} {
		var o iperfOut
		if err := json.Unmarshal([]byte(c.json), &o); err != nil {
			t.Fatal(err)
		}
		if got := o.udpReceived(); math.Abs(got-c.want) > 1 {
			t.Errorf("%s: received %.0f bit/s, want %.0f", c.name, got, c.want)
		}
	}
}
