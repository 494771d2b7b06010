"""Minted credentials on the real API server: the chart installed by helm, `tcr-assistant run` as a
host process (webhooks included), and the TCR API stand-in over HTTPS on this machine. The token
reaches the namespaces, is renewed before it expires, survives a refused mint, is never readable
through a passwordSecretRef, and goes when tokenFrom does."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_support import K, metrics_text

from harness import addon, pki
from harness.cluster import ControlPlane
from harness.tcr_standin import INSTANCE, REGION, SECRET_ID, SECRET_KEY, TcrStandIn, https_context, serving
from support import kubectl, pointed_at, wait_for

LIFETIME = 8.0  # seconds: renewed after 4
SERVER = "minted.tencentcloudcr.com"
API_KEY = "tcr-api-key"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TcrStandIn]:
    context = https_context(pki.CertificateAuthority("tcr-api-minting-test-ca"), tmp_path / "api-tls")
    with serving(TcrStandIn(fixed_token=None, token_lifetime=LIFETIME), tls=context) as running:
        yield running
    assert running.problems == []


def condition(k: K, name: str) -> dict[str, Any]:
    conditions = (((k.ips(name) or {}).get("status") or {}).get("conditions")) or []
    return next((c for c in conditions if c.get("type") == "TokenMinted"), {})


def distributed(k: K, namespace: str, name: str) -> tuple[str, str]:
    secret = k.secret(namespace, f"tcr.ips{name}") or {}
    raw = (secret.get("data") or {}).get(".dockerconfigjson")
    if not raw:
        return "", ""
    auth = json.loads(base64.b64decode(raw))["auths"][SERVER]
    return str(auth["username"]), str(auth["password"])


def api_key_secret(secret_key: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": API_KEY, "namespace": addon.NAMESPACE,
        "labels": {"tcr.tencentcloudcr.com/credential-source": "true"}},
        "stringData": {"secretId": SECRET_ID, "secretKey": secret_key}}
    kubectl("apply", "-f", "-", input_text=json.dumps(manifest))


def controller(control_plane: ControlPlane, tmp_path: Path) -> contextlib.AbstractContextManager[addon.Addon]:
    """The chart and `tcr-assistant run`, trusting the stand-in's CA (no registry to check here)."""
    flags = [f"--registry-ca-file={tmp_path / 'api-tls' / 'ca.crt'}", "--no-registry-check"]
    return addon.running(control_plane, tmp_path / "addon", extra_args=flags)


def minted_ips(k: K, api: TcrStandIn, prefix: str, **tcr: str) -> tuple[str, str]:
    """A new namespace and an ImagePullSecret minted from ``api`` with the labelled API key; (name, namespace)."""
    name, namespace = f"{prefix}-{uuid.uuid4().hex[:6]}", f"app-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    k.create_ips(name, {"namespaces": "*", "docker": {"server": SERVER, "tokenFrom": {"tcr": {
        "instanceId": INSTANCE, "region": REGION, "endpoint": api.address, **tcr,
        "apiKeySecretRef": {"name": API_KEY}}}}})
    return name, namespace


def test_a_minted_token_is_distributed_renewed_and_kept_through_a_refusal(
        k: K, control_plane: ControlPlane, tmp_path: Path, api: TcrStandIn) -> None:
    with controller(control_plane, tmp_path) as running, pointed_at(control_plane):
        api_key_secret(SECRET_KEY)
        started = time.monotonic()
        name, namespace = minted_ips(k, api, "minted")
        wait_for(lambda: distributed(k, namespace, name)[1] != "", timeout=30, interval=0.1,
                 what="the minted token in the namespace")
        print(f"\n[minting] first token in the namespace {time.monotonic() - started:.2f} s after the create")
        first = api.issued[0]
        assert distributed(k, namespace, name) == (first.username, first.token)
        wait_for(lambda: condition(k, name).get("status") == "True", timeout=10, interval=0.1,
                 what="TokenMinted True")
        status = (k.ips(name) or {})["status"]
        assert status["tokenExpiresAt"].endswith("Z") and first.token not in json.dumps(status)
        minted_secret = k.secret(addon.NAMESPACE, f"tcr.tok{name}") or {}
        assert minted_secret["metadata"]["labels"]["tcr.tencentcloudcr.com/credential-source"] == "minted"
        assert minted_secret["metadata"]["ownerReferences"][0]["name"] == name
        expiry = [line for line in metrics_text(running.metrics_url).splitlines()
                  if line.startswith(f'tcr_assistant_token_expiry_seconds{{image_pull_secret="{name}"}}')]
        assert expiry and 0 < float(expiry[0].split()[-1]) <= LIFETIME

        # Renewed at half its lifetime: the successor is everywhere before the first one lapses.
        assert first.expires_at is not None
        wait_for(lambda: distributed(k, namespace, name)[1] not in ("", first.token), timeout=LIFETIME,
                 interval=0.1, what="the renewed token in the namespace")
        assert time.time() < first.expires_at, "renewed before the first token expired"

        # A refused API key: the token in place stays, the condition says why, an Event too.
        api_key_secret("a-wrong-secret-key-never-shown")
        held = distributed(k, namespace, name)
        wait_for(lambda: condition(k, name).get("status") == "False", timeout=LIFETIME + 10, interval=0.2,
                 what="TokenMinted False")
        refused = condition(k, name)
        assert refused["reason"] == "APIKeyRefused" and "stays" in refused["message"], refused
        assert distributed(k, namespace, name) == held
        wait_for(lambda: any(e["reason"] == "TokenMintAPIKeyRefused" and e["type"] == "Warning"
                             for e in k.events_for(name)), timeout=20, what="a Warning Event")
        api_key_secret(SECRET_KEY)  # back: the change of Secret mints at once
        wait_for(lambda: condition(k, name).get("status") == "True", timeout=20, interval=0.2,
                 what="TokenMinted True again")
        logs = running.controller_log.read_text() if running.controller_log.exists() else ""
        assert SECRET_KEY not in logs and not any(t.token in logs for t in api.issued)

        # Nobody can read the minted token through a passwordSecretRef: the webhook refuses it.
        stolen = kubectl("apply", "-f", "-", check=False, input_text=json.dumps({
            "apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret",
            "metadata": {"name": f"steal-{uuid.uuid4().hex[:6]}"},
            "spec": {"docker": {"server": "attacker.example.com", "username": "u",
                                "passwordSecretRef": {"name": f"tcr.tok{name}"}}}}))
        assert stolen.returncode != 0 and "not marked as a credential source" in stolen.stderr, stolen.stderr

        # tokenFrom taken out: its Secret goes with it.
        k.patch_ips(name, {"spec": {"docker": {"tokenFrom": None, "username": "u", "password": "p"}}})
        wait_for(lambda: k.secret(addon.NAMESPACE, f"tcr.tok{name}") is None, timeout=20,
                 what="the minted token's Secret deleted")
        k.delete_ips(name)


def test_a_longterm_token_is_minted_once_and_kept_across_a_restart(
        k: K, control_plane: ControlPlane, tmp_path: Path, api: TcrStandIn) -> None:
    with controller(control_plane, tmp_path) as running, pointed_at(control_plane):
        api_key_secret(SECRET_KEY)
        name, namespace = minted_ips(k, api, "longterm", tokenType="longterm")
        wait_for(lambda: distributed(k, namespace, name)[1] != "", timeout=30, interval=0.1,
                 what="the longterm token in the namespace")
        wait_for(lambda: condition(k, name).get("status") == "True", timeout=10, what="TokenMinted True")
        assert [t.expires_at for t in api.issued] == [None]
        assert "tokenExpiresAt" not in (k.ips(name) or {})["status"]
        running.stop_controller()
        running.start_controller()

        def mint_keys_processed() -> float:
            return sum(float(line.split()[-1]) for line in metrics_text(running.metrics_url).splitlines()
                       if line.startswith('tcr_assistant_reconcile_total{kind="mint"}'))

        # The restarted controller looked at the ImagePullSecret's token, and minted nothing.
        wait_for(lambda: mint_keys_processed() >= 1, timeout=20, what="the restarted controller's mint key")
        assert len(api.issued) == 1 and distributed(k, namespace, name) == (api.issued[0].username,
                                                                            api.issued[0].token)
        k.delete_ips(name)
