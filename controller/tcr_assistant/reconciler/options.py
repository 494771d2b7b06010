"""The controller's settings and their defaults (the `tcr-assistant run` flags read them here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tcr_assistant.spec import api


@dataclass
class Options:
    namespace: str  # the add-on's own namespace: Lease, passwordSecretRef Secrets
    workers: int = 16
    # How hand edits and deletions of our Secrets are found (docs/DESIGN.md "Drift repair"):
    # "poll" GETs each one by name once per drift_period, spread evenly (no cluster-wide Secret
    # access; idle cost N/drift_period requests per second, repair within drift_period);
    # "watch" watches our Secrets (label selector): no idle requests, repair within a second,
    # but it needs list/watch on Secrets cluster-wide.
    drift_mode: str = "poll"
    drift_period: float = 1200.0
    # "poll" mode: a Pod admitted in a served namespace has our Secrets there read at once, at
    # most once per this many seconds per namespace (0: never), so a deleted one is back before
    # the kubelet pulls. Needs the Pod webhook.
    pod_check_interval: float = 10.0
    # Ask each registry whether it accepts the credential (the CredentialsAccepted condition):
    # on every change of credential, then every registry_check_period seconds. Its name resolves
    # through registry_addresses (the hosts entries the nodes get), else DNS; its certificate is
    # checked against registry_ca_file, else the system's CAs.
    registry_check: bool = True
    registry_check_period: float = 600.0
    registry_addresses: dict[str, str] = field(default_factory=dict)
    registry_ca_file: str | None = None
    sa_drift_delay: float = 1.0  # first wait before putting back a removed entry (doubles)
    status_delay: float = 1.0  # status writes are debounced by this much
    status_settle_limit: float = 30.0  # wait at most this long for unchecked namespaces
    watch_timeout: int = 300  # server-side watch timeout (seconds)
    read_timeout: float = 330.0  # client-side: a silent watch longer than this is dead
    leader_elect: bool = False
    lease_name: str = api.LEASE_NAME
    identity: str | None = None
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


DRIFT_MODES = ("poll", "watch")
WATCH_READ_MARGIN = 30.0  # the read timeout the CLI sets: watch timeout + this
DEFAULTS = Options(namespace="")


def default_namespace() -> str | None:
    from tcr_assistant.k8s.client import namespace_file

    return os.environ.get("POD_NAMESPACE") or namespace_file()


def user_agent() -> str:
    """``tcr-assistant/<version>``: what every request of this process says it comes from."""
    try:
        from importlib.metadata import version

        return f"{api.COMPONENT}/{version('tcr-assistant')}"
    except Exception:
        return f"{api.COMPONENT}/dev"
