"""Prometheus metrics of one agent, in a registry of its own (several agents can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300, 900)


class Metrics:
    """The agent's counters, gauges and histograms; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.files_synced = Counter("domino_sync_files_synced", "Files copied into the mount", registry=r)
        self.bytes_synced = Counter("domino_sync_bytes_synced", "Bytes copied into the mount", registry=r)
        self.files_deleted = Counter("domino_sync_files_deleted", "Files removed from the mount", registry=r)
        self.files_moved = Counter("domino_sync_files_moved", "Files renamed inside the mount (not copied)", registry=r)
        self.drop_to_mount = Histogram(
            "domino_sync_drop_to_mount_seconds",
            "Time from a change first seen in the source to its content in the mount",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.api_calls = Counter(
            "domino_sync_api_calls", "Datasets API calls by method, route and outcome",
            ["method", "route", "outcome"], registry=r,
        )  # fmt: skip
        self.api_seconds = Histogram(
            "domino_sync_api_call_seconds", "Datasets API call duration", ["method", "route"], registry=r
        )
        self.snapshots = Counter("domino_sync_snapshots", "Snapshots created", registry=r)
        self.tags = Counter("domino_sync_tags", "Tags applied to snapshots", registry=r)
        self.rule_fires = Counter("domino_sync_rule_fires", "Rule triggers that fired", ["rule"], registry=r)
        self.errors = Counter("domino_sync_errors", "Errors by kind", ["kind"], registry=r)
        self.queue_depth = Gauge("domino_sync_queue_depth", "Jobs waiting or in flight in the task queue", registry=r)
        self.dead_letters = Gauge("domino_sync_dead_letters", "Jobs parked after failing", registry=r)
        self.pending_files = Gauge("domino_sync_pending_files", "Changed files not yet in the mount", registry=r)
        self.ready = Gauge(
            "domino_sync_ready", "1 when the agent is ready (scan done, mount and API answer)", registry=r
        )

    def observe_api(self, method: str, route: str, outcome: str, seconds: float) -> None:
        """The API client's observer hook."""
        self.api_calls.labels(method, route, outcome).inc()
        self.api_seconds.labels(method, route).observe(seconds)

    def bind_gauges(
        self,
        *,
        queue_depth: Callable[[], float],
        dead_letters: Callable[[], float],
        pending_files: Callable[[], float],
        ready: Callable[[], float],
    ) -> None:
        """Gauges read live values at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.dead_letters.set_function(dead_letters)
        self.pending_files.set_function(pending_files)
        self.ready.set_function(ready)

    def render(self) -> bytes:
        return generate_latest(self.registry)
