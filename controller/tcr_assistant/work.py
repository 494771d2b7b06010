"""Work items (typed queue keys) and what processing one can ask for (`Requeue`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NamespaceKey:
    """Every ImagePullSecret's Secret in one namespace, then its ServiceAccounts."""

    name: str

    def __str__(self) -> str:
        return f"namespace {self.name}"


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    """One ServiceAccount (the fast path for a new account)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"serviceaccount {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ImagePullSecretKey:
    """Its plan, finalizer, clean-up on deletion, fan-out to namespaces."""

    name: str

    def __str__(self) -> str:
        return f"imagepullsecret {self.name}"


@dataclass(frozen=True, slots=True)
class StatusKey:
    """The status of one ImagePullSecret (debounced: added with a delay)."""

    name: str

    def __str__(self) -> str:
        return f"status {self.name}"


WorkKey = NamespaceKey | ServiceAccountKey | ImagePullSecretKey | StatusKey


def kind_of(key: WorkKey) -> str:
    """The metrics label of a key."""
    labels = {NamespaceKey: "ns", ServiceAccountKey: "sa", ImagePullSecretKey: "ips", StatusKey: "status"}
    return labels.get(type(key), "unknown")


@dataclass(frozen=True, slots=True)
class Requeue:
    """Processed, but come back after ``after`` seconds (not a failure: no backoff)."""

    after: float


class UnknownKey(TypeError):
    """A queue key of no known type: a programming error, never retried."""
