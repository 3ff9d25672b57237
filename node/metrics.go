package node

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prometheus metrics of a node, served at /metrics on the local API. They
// are computed when scraped, from the same figures as `ferry status`.

var (
	descHeads      = prometheus.NewDesc("ferry_heads", "Number of DAG heads.", nil, nil)
	descHeight     = prometheus.NewDesc("ferry_dag_height", "Maximum DAG height.", nil, nil)
	descQueued     = prometheus.NewDesc("ferry_queued_dag_jobs", "DAG blocks queued for merging.", nil, nil)
	descDirty      = prometheus.NewDesc("ferry_dirty", "1 when the store is marked dirty (a repair is due).", nil, nil)
	descFailed     = prometheus.NewDesc("ferry_failed_store_writes_total", "Writes to the store that failed (a full disk) since start.", nil, nil)
	descDiskFree   = prometheus.NewDesc("ferry_disk_free_bytes", "Free bytes on the data dir's filesystem.", nil, nil)
	descDiskRes    = prometheus.NewDesc("ferry_disk_reserve_bytes", "Free space under which local writes are refused.", nil, nil)
	descMalformed  = prometheus.NewDesc("ferry_malformed_ops_total", "Operations ignored because they did not decode.", nil, nil)
	descOnline     = prometheus.NewDesc("ferry_online", "1 when the node is online.", nil, nil)
	descConnected  = prometheus.NewDesc("ferry_connected_peers", "Connected peers.", nil, nil)
	descUnacked    = prometheus.NewDesc("ferry_unacked_edits", "Local edits no office node holds yet.", nil, nil)
	descUnackedAge = prometheus.NewDesc("ferry_oldest_unacked_edit_age_seconds",
		"Age of the oldest local edit no office node holds yet (0 when none).", nil, nil)
	descSinceSync = prometheus.NewDesc("ferry_seconds_since_last_sync",
		"Seconds since the last heads exchange with a peer.", []string{"peer"}, nil)
	descFetched      = prometheus.NewDesc("ferry_blocks_fetched_total", "DAG blocks received in bulk catch-ups.", nil, nil)
	descFetchedBytes = prometheus.NewDesc("ferry_block_bytes_fetched_total", "Bytes of DAG blocks received in bulk catch-ups.", nil, nil)
	descRemaining    = prometheus.NewDesc("ferry_catchup_blocks_remaining", "Blocks still to receive in the bulk catch-up in progress.", nil, nil)
	descBytesIn      = prometheus.NewDesc("ferry_peer_received_bytes_total", "Bytes received from a peer.", []string{"peer"}, nil)
	descBytesOut     = prometheus.NewDesc("ferry_peer_sent_bytes_total", "Bytes sent to a peer.", []string{"peer"}, nil)
)

type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHeads, descHeight, descQueued, descDirty, descFailed, descDiskFree, descDiskRes, descMalformed, descOnline,
		descConnected, descUnacked, descUnackedAge, descSinceSync, descBytesIn, descBytesOut,
		descFetched, descFetchedBytes, descRemaining} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	ctx, cancel := context.WithTimeout(n.life.Context(), 10*time.Second)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := n.store.Stats(ctx)
	gauge(descHeads, float64(len(st.Heads)))
	gauge(descHeight, float64(st.MaxHeight))
	gauge(descQueued, float64(st.QueuedJobs))
	gauge(descDirty, b2f(st.Dirty))
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(st.FailedWrites))
	if sp, err := n.disk.Space(); err == nil {
		gauge(descDiskFree, float64(sp.Free))
		gauge(descDiskRes, float64(sp.Reserve))
	}
	ch <- prometheus.MustNewConstMetric(descMalformed, prometheus.CounterValue, float64(st.Malformed))
	gauge(descOnline, b2f(!n.Offline()))
	if u, err := n.acks.unacked(ctx); err == nil {
		gauge(descUnacked, float64(u.Count))
		age := 0.0
		if !u.Oldest.IsZero() {
			age = time.Since(u.Oldest).Seconds()
		}
		gauge(descUnackedAge, age)
	}
	if !n.netUp() {
		return
	}
	bs := n.net.blocks.Stats()
	ch <- prometheus.MustNewConstMetric(descFetched, prometheus.CounterValue, float64(bs.FetchedBlocks))
	ch <- prometheus.MustNewConstMetric(descFetchedBytes, prometheus.CounterValue, float64(bs.FetchedBytes))
	remaining := 0
	if bs.InProgress {
		remaining = max(0, bs.Current.Total-bs.Current.Blocks)
	}
	gauge(descRemaining, float64(remaining))
	gauge(descConnected, float64(len(n.net.host.Network().Peers())))
	peers, err := n.Peers(ctx)
	if err == nil {
		for _, p := range peers {
			if !p.LastSync.IsZero() {
				gauge(descSinceSync, time.Since(p.LastSync).Seconds(), p.ID)
			}
		}
	}
	for p, s := range n.net.bandwidth.GetBandwidthByPeer() {
		ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(s.TotalIn), p.String())
		ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(s.TotalOut), p.String())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Metrics serves the node's metrics and the Go runtime's (Prometheus).
func (n *Node) Metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(nodeCollector{n}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
