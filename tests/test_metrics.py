"""Prometheus text exposition: families, labels, histograms."""

from __future__ import annotations

from rciots.controller import metrics


def test_families_render_as_prometheus_text() -> None:
    text = metrics.render(
        [
            metrics.Family(
                "rciots_devices",
                "gauge",
                "Devices by state.",
                [metrics.Sample(3, {"state": "in-sync"}), metrics.Sample(0, {"state": "failed"})],
            ),
            metrics.Family(
                "rciots_sent_bytes_total",
                "counter",
                "Bytes\\sent\nto agents.",
                [metrics.Sample(1.5)],
            ),
            metrics.Family(
                "rciots_render_errors",
                "gauge",
                "Per tenant.",
                [metrics.Sample(1, {"tenant": 'odd"name\\with\nbreak'})],
            ),
        ]
    )
    assert text == (
        "# HELP rciots_devices Devices by state.\n"
        "# TYPE rciots_devices gauge\n"
        'rciots_devices{state="in-sync"} 3\n'
        'rciots_devices{state="failed"} 0\n'
        "# HELP rciots_sent_bytes_total Bytes\\\\sent\\nto agents.\n"
        "# TYPE rciots_sent_bytes_total counter\n"
        "rciots_sent_bytes_total 1.5\n"
        "# HELP rciots_render_errors Per tenant.\n"
        "# TYPE rciots_render_errors gauge\n"
        'rciots_render_errors{tenant="odd\\"name\\\\with\\nbreak"} 1\n'
    )


def test_a_histogram_counts_into_cumulative_buckets() -> None:
    histogram = metrics.Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    text = metrics.render([histogram.family("rciots_reconcile_duration_seconds", "Passes.")])
    assert text.splitlines()[2:] == [
        'rciots_reconcile_duration_seconds_bucket{le="0.1"} 2',
        'rciots_reconcile_duration_seconds_bucket{le="1"} 3',
        'rciots_reconcile_duration_seconds_bucket{le="+Inf"} 4',
        "rciots_reconcile_duration_seconds_sum 3.65",
        "rciots_reconcile_duration_seconds_count 4",
    ]
