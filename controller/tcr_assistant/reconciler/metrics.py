"""Prometheus metrics and the health/metrics routes of the controller."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

Route = Callable[[], tuple[int, str, bytes]]


class TokenExpiry(Collector):
    """Seconds until each minted temp token expires, computed when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("tcr_assistant_token_expiry_seconds",
                                 "Seconds until the token minted for the ImagePullSecret expires (temp tokens)",
                                 labels=["image_pull_secret"])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self.family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self.family()
        for name, seconds in sorted(self.metrics.token_expiries().items()):
            family.add_metric([name], seconds)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("tcr_assistant_reconcile", "Work items processed", ["kind"], registry=r)
        self.errors = Counter(
            "tcr_assistant_reconcile_errors", "Work items that failed (retried with backoff)", ["kind"], registry=r
        )
        self.queue_depth = Gauge("tcr_assistant_workqueue_depth", "Keys waiting in the work queue", registry=r)
        self.link_latency = Histogram(
            "tcr_assistant_link_latency_seconds",
            "Delay from a ServiceAccount being seen by the controller to its imagePullSecrets link being written",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.writes = Counter("tcr_assistant_api_writes", "Writes sent to the API server", ["resource"], registry=r)
        self.repairs = Counter("tcr_assistant_drift_repairs", "Drift repaired", ["kind"], registry=r)
        self.retries = Counter(
            "tcr_assistant_api_retries",
            "Writes answered 409 and retried after a read (reason: conflict or already_exists)",
            ["resource", "reason"],
            registry=r,
        )
        self.admission_checks = Counter(
            "tcr_assistant_admission_checks",
            "Namespaces whose Secrets were read because a Pod was admitted there (drift poll mode; "
            "outcome: intact, or repaired = one was deleted or changed and is being rewritten)",
            ["outcome"],
            registry=r,
        )
        self.registry_checks = Counter(
            "tcr_assistant_registry_checks",
            "Answers of registries asked whether they accept a credential (reason: Accepted, Refused, "
            "Unreachable, TLSError, AddressRefused, UnexpectedAnswer)",
            ["reason"],
            registry=r,
        )
        self.credentials_accepted = Gauge(
            "tcr_assistant_registry_credentials_accepted",
            "1 when the registry accepted the ImagePullSecret's credential at its last check, else 0",
            ["image_pull_secret"],
            registry=r,
        )
        self.token_mints = Counter(
            "tcr_assistant_token_mints",
            "Calls of the TCR API for a token (tokenFrom; outcome: minted, failure)",
            ["outcome"],
            registry=r,
        )
        self.token_expiries: Callable[[], Mapping[str, float]] = dict
        r.register(TokenExpiry(self))
        self.leader = Gauge("tcr_assistant_leader", "1 while this replica holds the lease", registry=r)
        self.connections_dropped = Counter(
            "tcr_assistant_http_connections_dropped",
            "Connections the webhook, health or metrics server closed itself (reason: client_limit = the "
            "client address held its maximum, total_limit = every slot taken, evicted = made room for a "
            "less busy address, deadline = the request was not done in time)",
            ["server", "reason"],
            registry=r,
        )

    def connection_dropped(self, server: str) -> Callable[[str], None]:
        """What the server ``server`` calls with the reason of each connection it closes itself."""

        def count(reason: str) -> None:
            self.connections_dropped.labels(server=server, reason=reason).inc()

        return count


def health_routes(checks: Mapping[str, Callable[[], bool]]) -> dict[str, Route]:
    """/healthz (the process answers) and /readyz (every check passes; the body names those that fail)."""

    def healthz() -> tuple[int, str, bytes]:
        return 200, "text/plain", b"ok\n"

    def readyz() -> tuple[int, str, bytes]:
        failing = [name for name, check in checks.items() if not check()]
        if not failing:
            return 200, "text/plain", b"ok\n"
        return 503, "text/plain", f"not ready: {', '.join(failing)}\n".encode()

    return {"/healthz": healthz, "/readyz": readyz}


def metrics_routes(metrics: Metrics, queue_depth: Callable[[], int]) -> dict[str, Route]:
    def serve() -> tuple[int, str, bytes]:
        metrics.queue_depth.set(queue_depth())
        return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)

    return {"/metrics": serve}
