"""Mints the registry token of each ImagePullSecret whose credential comes from
``spec.docker.tokenFrom.tcr`` (a `MintKey` per ImagePullSecret, on the leader's workers), and
keeps it in the add-on namespace's ``tcr.tok<name>`` Secret, from which the plan distributes it
like a password (``tcrtoken.decision`` says when and how). The TCR API is called by
``python -m tcr_assistant.tcrtoken.helper``, a process of its own, so the SDK never stays in this
one. A failed mint keeps the current token, shows in the TokenMinted condition and a Warning
Event, and is retried with backoff; the token's expiry shows in ``status.tokenExpiresAt`` and as
the metric ``tcr_assistant_token_expiry_seconds``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tcr_assistant.k8s.client import SECRETS, Kube, KubeError, rfc3339
from tcr_assistant.reconciler import status
from tcr_assistant.reconciler.keys import MintKey, Requeue
from tcr_assistant.reconciler.metrics import Metrics
from tcr_assistant.reconciler.pacing import Pacing
from tcr_assistant.reconciler.state import ControllerState
from tcr_assistant.spec import api, validation
from tcr_assistant.tcrtoken import decision
from tcr_assistant.tcrtoken.decision import HeldToken, MintedToken, MintRecord, MintSource

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 60.0
REQUEST_TIMEOUT = 20  # seconds per API request, in the helper
MIN_INTERVAL = 1.0  # seconds between two mints of one ImagePullSecret
CONDITION = "TokenMinted"


class MintFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def run_helper(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """``tcrtoken.helper`` in a process of its own (the secrets go on its stdin, never its argv)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "tcr_assistant.tcrtoken.helper"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise MintFailure("MintFailed", f"the token helper did not answer within {HELPER_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        # Its stderr is a traceback of code lines; the request's values are never printed.
        raise MintFailure("MintFailed", f"the token helper exited with {proc.returncode}")
    answer: Mapping[str, Any] = json.loads(proc.stdout)
    return answer


class Minter:
    def __init__(self, kube: Kube, state: ControllerState, metrics: Metrics, namespace: str, ca_file: str | None,
                 queue_after: Callable[[MintKey, float], None], status_changed: Callable[[str], None],
                 warn: Callable[[Any, str, str], None], monotonic: Callable[[], float],
                 helper: Callable[[Mapping[str, Any]], Mapping[str, Any]] = run_helper) -> None:
        self.kube, self.state, self.metrics, self.namespace = kube, state, metrics, namespace
        self.ca_file = ca_file
        self.queue_after, self.status_changed, self.warn = queue_after, status_changed, warn
        self.monotonic = monotonic
        self.helper = helper
        self.pacing = Pacing(MIN_INTERVAL)
        metrics.token_expiries = self.expiries

    # -- what the other parts ask -------------------------------------------------------------------

    def held(self, name: str) -> HeldToken | None:
        with self.state.lock:
            return decision.held_token(self.state.local_secrets.get(decision.state_key(decision.secret_name(name))))

    def plan_seen(self, name: str) -> None:
        """The ImagePullSecret ``name`` (or its token's or API key's Secret) changed: look again."""
        self.queue_after(MintKey(name), self.pacing.delay(name, self.monotonic()))

    def status_parts(self, name: str, spec: Mapping[str, Any], previous: Sequence[Mapping[str, Any]] | None,
                     now: str) -> tuple[list[dict[str, str]], str | None]:
        """The TokenMinted condition and ``tokenExpiresAt`` of a minted credential (none otherwise)."""
        if decision.mint_source(spec) is None:
            return [], None
        held = self.held(name)
        with self.state.lock:
            record = self.state.mint_records.get(name)
        condition = status.condition(CONDITION, *decision.condition_of(record, held), previous, now)
        expires = held.expires_at if held is not None else None
        return [condition], rfc3339(expires) if expires is not None else None

    def expiries(self) -> dict[str, float]:
        """ImagePullSecret -> seconds until its minted temp token expires (the metric)."""
        with self.state.lock:
            names = [n for n, obj in self.state.image_pull_secrets.items()
                     if decision.mint_source(obj.get("spec") or {}) is not None]
        now = time.time()
        return {n: held.expires_at - now for n in names
                if (held := self.held(n)) is not None and held.expires_at is not None}

    # -- the work key ---------------------------------------------------------------------------------

    def sync(self, name: str) -> Requeue | None:
        with self.state.lock:
            obj = self.state.image_pull_secrets.get(name)
        spec = (obj or {}).get("spec") or {}
        deleting = bool(((obj or {}).get("metadata") or {}).get("deletionTimestamp"))
        source = None if obj is None or deleting or validation.validate_spec(spec) else decision.mint_source(spec)
        held = self.held(name)
        if source is None:
            if obj is not None and not deleting and decision.mint_source(spec) is None and held is not None:
                self._delete(name)  # tokenFrom was taken out: its token goes (deletion: the GC's)
            return None
        wait = decision.seconds_until_mint(source, held, time.time())
        if wait is None or wait > 0:
            return None if wait is None else Requeue(wait)
        assert obj is not None
        self.pacing.started(name, self.monotonic())
        with self.state.lock:
            previous = self.state.mint_records.get(name)
        try:
            token = self._mint(source)
            self._write(obj, source, token)
        except MintFailure as failure:
            record = decision.failed(previous, failure.reason, failure.message)
            self._record(name, record, "failure")
            if previous is None or previous.reason != record.reason:
                log.warning("ImagePullSecret %s: minting failed: %s: %s", name, record.reason, record.message)
                self.warn(obj, f"TokenMint{record.reason}", record.message)
            return Requeue(decision.retry_after(record.failures))
        expiry = f", expires at {rfc3339(token.expires_at)}" if token.expires_at is not None else " (longterm)"
        log.info("ImagePullSecret %s: token minted for user %s%s", name, token.username, expiry)
        self._record(name, MintRecord("Minted", f"the token for user {token.username} was minted by the TCR API "
                                                f"for instance {source.instance_id}{expiry}"), "minted")
        wait = decision.seconds_until_mint(source, self.held(name), time.time())
        return None if wait is None else Requeue(max(wait, MIN_INTERVAL))

    def _record(self, name: str, record: MintRecord, outcome: str) -> None:
        with self.state.lock:
            self.state.mint_records[name] = record
        self.metrics.token_mints.labels(outcome).inc()
        self.status_changed(name)

    def _api_key(self, source: MintSource) -> dict[str, str] | None:
        if source.api_key_secret is None:
            return None  # the TKE Pod identity
        with self.state.lock:
            data = self.state.local_secrets.get(source.api_key_secret)
        key = {name: decision.secret_text(data, name) or "" for name in ("secretId", "secretKey")}
        if data is None or not all(key.values()):
            raise MintFailure("APIKeyUnavailable", f"apiKeySecretRef: Secret {source.api_key_secret!r} in the "
                              f"add-on's namespace, labelled {api.CREDENTIAL_SOURCE_SELECTOR}, needs the keys "
                              "secretId and secretKey")
        return key

    def _mint(self, source: MintSource) -> MintedToken:
        request = {"source": {"instanceId": source.instance_id, "region": source.region,
                              "tokenType": source.token_type, "endpoint": source.endpoint,
                              "stsEndpoint": source.sts_endpoint},
                   "apiKey": self._api_key(source), "caFile": self.ca_file, "timeout": REQUEST_TIMEOUT}
        try:
            answer = self.helper(request)
        except (ValueError, OSError) as exc:
            raise MintFailure("MintFailed", f"the token helper failed: {type(exc).__name__}") from None
        error = answer.get("error")
        if isinstance(error, Mapping):
            raise MintFailure(str(error.get("reason") or "MintFailed"), str(error.get("message") or ""))
        expires = answer.get("expiresAt")
        return MintedToken(str(answer.get("username") or ""), str(answer.get("token") or ""),
                           float(expires) if isinstance(expires, int | float) else None)

    def _write(self, obj: Mapping[str, Any], source: MintSource, token: MintedToken) -> None:
        name = str(obj["metadata"]["name"])
        data = decision.secret_data(token, source, time.time())
        body = decision.secret_body(obj, self.namespace, data)
        secret = decision.secret_name(name)
        try:
            try:
                self.kube.request("PUT", SECRETS.path(self.namespace, secret), body=body)
            except KubeError as exc:
                if not exc.not_found:
                    raise
                self.kube.request("POST", SECRETS.path(self.namespace), body=body)
        except KubeError as exc:
            # Not a failure of the API: the token is kept nowhere, so it is minted again next time.
            raise MintFailure("SecretWriteFailed", f"writing Secret {secret}: {exc.status} {exc.reason}") from None
        self.metrics.writes.labels("secrets").inc()
        with self.state.lock:  # what we wrote, until the watch brings it: no second mint meanwhile
            self.state.local_secrets[decision.state_key(secret)] = data

    def _delete(self, name: str) -> None:
        with self.state.lock:
            self.state.mint_records.pop(name, None)
        secret = decision.secret_name(name)
        try:
            self.kube.request("DELETE", SECRETS.path(self.namespace, secret))
        except KubeError as exc:
            if not exc.not_found:
                raise
        with self.state.lock:
            self.state.local_secrets.pop(decision.state_key(secret), None)
