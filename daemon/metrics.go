package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tapstack/tapstack/metrics"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack/nshost"
)

// metricsServer serves /metrics for --metrics.
type metricsServer struct {
	srv  *http.Server
	addr net.Addr
	done chan struct{}
}

// startMetrics listens on addr and serves the host's, the gateway's and
// the process's metrics on /metrics, each labelled with the namespace.
func startMetrics(addr, netns string, h *nshost.Host, gw *relay.Gateway, more []relay.Counter, log *slog.Logger) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	labelled := prometheus.WrapRegistererWith(prometheus.Labels{"netns": netns}, reg)
	labelled.MustRegister(metrics.New(h.Stack, h.Link), gw.Collector(more...))
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4}))
	m := &metricsServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10},
		addr: ln.Addr(), done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return m, nil
}

// Close stops the server and waits for it.
func (m *metricsServer) Close() {
	m.srv.Close()
	<-m.done
}
