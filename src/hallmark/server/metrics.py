"""Prometheus metrics (served at /metrics when the server runs with --metrics)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hallmark_requests",
            "Requests by endpoint, model and outcome",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.refusals = Counter(
            "hallmark_refusals",
            "Requests refused before they ran, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "hallmark_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.generated_tokens = Counter(
            "hallmark_generated_tokens", "Tokens generated", ["model"], registry=r
        )
        self.watermarked_tokens = Counter(
            "hallmark_watermarked_tokens",
            "Generated tokens chosen by the watermark scheme",
            ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "hallmark_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "hallmark_request_duration_seconds",
            "Request duration",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge("hallmark_sequences_running", "Sequences decoding now", ["model"], registry=r)
        self.waiting = Gauge(
            "hallmark_sequences_waiting", "Sequences waiting for a slot", ["model"], registry=r
        )

    def watch_log(self, stats: Callable[[], dict]) -> None:
        """Export the request log writer's queue and failures (hallmark.requestlog.RequestLog.stats)."""
        pending = Gauge(
            "hallmark_log_pending", "Request log rows waiting to be written", registry=self.registry
        )
        failed = Gauge(
            "hallmark_log_failed_rows", "Request log rows that could not be written", registry=self.registry
        )
        pending.set_function(lambda: stats()["pending"])
        failed.set_function(lambda: stats()["failed"])

    def watch_engine(self, model: str, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        self.running.labels(model).set_function(running)
        self.waiting.labels(model).set_function(waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)
