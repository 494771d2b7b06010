"""Work items (typed queue keys) and what processing one can ask for (`Requeue`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NamespaceKey:
    """Every write in one namespace: every ImagePullSecret's Secret there, then its
    ServiceAccounts (a new or changed account queues its namespace's key)."""

    name: str

    def __str__(self) -> str:
        return f"namespace {self.name}"


@dataclass(frozen=True, slots=True)
class ImagePullSecretKey:
    """Its plan, finalizer, fan-out to namespaces (whose keys also do its clean-up)."""

    name: str

    def __str__(self) -> str:
        return f"imagepullsecret {self.name}"


@dataclass(frozen=True, slots=True)
class StatusKey:
    """The status of one ImagePullSecret (debounced: added with a delay)."""

    name: str

    def __str__(self) -> str:
        return f"status {self.name}"


@dataclass(frozen=True, slots=True)
class CheckKey:
    """Read our Secrets in one namespace, where a Pod was just admitted, and queue the namespace
    if one was deleted or changed (drift "poll" mode; rate-limited per namespace)."""

    name: str

    def __str__(self) -> str:
        return f"check {self.name}"


@dataclass(frozen=True, slots=True)
class RegistryKey:
    """Ask the registry whether it accepts one ImagePullSecret's credential (the
    CredentialsAccepted condition)."""

    name: str

    def __str__(self) -> str:
        return f"registry check {self.name}"


@dataclass(frozen=True, slots=True)
class MintKey:
    """Mint or renew one ImagePullSecret's token (``spec.docker.tokenFrom``) when it is due."""

    name: str

    def __str__(self) -> str:
        return f"token {self.name}"


WorkKey = NamespaceKey | ImagePullSecretKey | StatusKey | CheckKey | RegistryKey | MintKey


def kind_of(key: WorkKey) -> str:
    """The metrics label of a key."""
    labels = {NamespaceKey: "ns", ImagePullSecretKey: "ips", StatusKey: "status", CheckKey: "check",
              RegistryKey: "registry", MintKey: "mint"}
    return labels.get(type(key), "unknown")


@dataclass(frozen=True, slots=True)
class Requeue:
    """Processed, but come back after ``after`` seconds (not a failure: no backoff)."""

    after: float


class UnknownKey(TypeError):
    """A queue key of no known type: a programming error, never retried."""
