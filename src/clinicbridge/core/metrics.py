"""Prometheus metrics, one registry per app so tests never share counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.http_requests = Counter(
            "clinicbridge_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "clinicbridge_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.worker_heartbeat_age = Gauge(
            "clinicbridge_worker_heartbeat_age_seconds",
            "Seconds since the freshest worker heartbeat (-1: none)",
            registry=self.registry,
        )

        self.job_claim_latency = Histogram(
            "clinicbridge_job_claim_latency_seconds",
            "Time from a job being due to a worker claiming it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.job_run_duration = Histogram(
            "clinicbridge_job_run_duration_seconds",
            "Time a job's handler ran",
            ["kind"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "clinicbridge_jobs_finished",
            "Job runs by kind and resulting state",
            ["kind", "state"],
            registry=self.registry,
        )
        self.jobs_by_state = Gauge(
            "clinicbridge_jobs",
            "Jobs in the database by state and kind",
            ["state", "kind"],
            registry=self.registry,
        )

        self.webhooks_received = Counter(
            "clinicbridge_webhooks_received",
            "Inbound webhook requests by connector and outcome",
            ["connector", "outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
