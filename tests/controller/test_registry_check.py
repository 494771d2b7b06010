"""CredentialsAccepted on the real API server: the chart installed by helm, `tcr-assistant run` as a
host process (webhooks included), and a real registry (distribution, htpasswd, TLS from our CA)
on this machine's own address, reached through a hosts entry as the nodes would reach it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_support import K, free_port, host_address, metrics_text

from harness import addon, pki, registry
from harness.cluster import ControlPlane
from support import kubectl, pointed_at, wait_for
from tcr_assistant.reconciler.credcheck import CONDITION

HOSTNAME = "checked.tencentcloudcr.com"
USERNAME = "100012345678"
PASSWORD = "ch3cked-Pa55word-91d2"
WRONG = "not-the-Pa55word-40aa"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[registry.PrivateRegistry, Path]]:
    authority = pki.CertificateAuthority("tcr-addon-check-test-ca")
    directory = tmp_path_factory.mktemp("checked-registry")
    (directory / "ca.crt").write_bytes(authority.cert_pem)
    address = host_address()
    with registry.PrivateRegistry(directory / "registry", hostname=HOSTNAME, listen=f"{address}:{free_port(address)}",
                                  ca=authority, username=USERNAME, password=PASSWORD, tie_to_parent=True) as running:
        yield running, directory / "ca.crt"


def condition(k: K, name: str) -> dict[str, Any]:
    conditions = (((k.ips(name) or {}).get("status") or {}).get("conditions")) or []
    return next((c for c in conditions if c.get("type") == CONDITION), {})


def column(name: str) -> str:
    """The ACCEPTED column of `kubectl get ipss NAME`."""
    header, row = kubectl("get", "ipss", name).stdout.splitlines()[:2]
    start = header.index("ACCEPTED")
    end = header.index("AGE")  # the next column: kubectl aligns cells under their headers
    return row[start:end].strip()


def test_the_registry_s_answer_shows_within_seconds_and_never_blocks(
        k: K, control_plane: ControlPlane, tmp_path: Path, private: tuple[registry.PrivateRegistry, Path]) -> None:
    reg, ca_file = private
    flags = [f"--registry-address={HOSTNAME}={reg.listen_host}", f"--registry-ca-file={ca_file}"]
    with addon.running(control_plane, tmp_path / "addon", extra_args=flags) as running, pointed_at(control_plane):
        name = f"checked-{uuid.uuid4().hex[:6]}"
        server = f"{HOSTNAME}:{reg.port}"
        k.create_ips(name, {"namespaces": "*", "serviceAccounts": "*",
                            "docker": {"server": server, "username": USERNAME, "password": PASSWORD}})
        try:
            wait_for(lambda: condition(k, name).get("status") == "True", timeout=20, interval=0.1,
                     what="CredentialsAccepted True")
            assert condition(k, name)["reason"] == "Accepted" and column(name) == "True"

            # A wrong password: admitted by the webhook (the check reports, it does not block),
            # distributed as given, and shown refused within seconds.
            started = time.monotonic()
            k.patch_ips(name, {"spec": {"docker": {"password": WRONG}}})
            wait_for(lambda: condition(k, name).get("status") == "False", timeout=20, interval=0.1,
                     what="CredentialsAccepted False")
            took = time.monotonic() - started
            print(f"\n[registry check] a wrong password shown refused {took:.2f} s after the change")
            refused = condition(k, name)
            assert refused["reason"] == "Refused" and "401" in refused["message"], refused
            assert column(name) == "False"
            status = json.dumps((k.ips(name) or {}).get("status"))
            assert PASSWORD not in status and WRONG not in status
            wait_for(lambda: any(e["reason"] == "RegistryRefused" and e["type"] == "Warning"
                                 for e in k.events_for(name)), timeout=20, what="a Warning Event")

            # Put right again: accepted again (a change is checked at once, 3 s after the last check at the latest).
            k.patch_ips(name, {"spec": {"docker": {"password": PASSWORD}}})
            wait_for(lambda: condition(k, name).get("status") == "True", timeout=25, interval=0.1,
                     what="CredentialsAccepted True again")
            metrics = metrics_text(running.metrics_url)
            assert f'tcr_assistant_registry_credentials_accepted{{image_pull_secret="{name}"}} 1.0' in metrics
            assert 'tcr_assistant_registry_checks_total{reason="Refused"}' in metrics
        finally:
            k.delete_ips(name, wait=True, timeout=60)
        log = (running.directory / "controller.log").read_text(errors="replace")
        running.cleanup_and_uninstall()
    assert PASSWORD not in log and WRONG not in log and "Traceback" not in log, log[-3000:]


def test_switched_off_no_condition_is_written(
        k: K, control_plane: ControlPlane, tmp_path: Path, private: tuple[registry.PrivateRegistry, Path]) -> None:
    reg, ca_file = private
    # (The host process takes its flags from the harness, as the chart renders them from
    # controller.registryCheck.enabled: tests/chart checks that rendering.)
    with addon.running(control_plane, tmp_path / "addon",
                       extra_args=["--no-registry-check", f"--registry-address={HOSTNAME}={reg.listen_host}",
                                   f"--registry-ca-file={ca_file}"]) as running, pointed_at(control_plane):
        name = f"unchecked-{uuid.uuid4().hex[:6]}"
        k.create_ips(name, {"namespaces": "*", "serviceAccounts": "*", "docker": {
            "server": f"{HOSTNAME}:{reg.port}", "username": USERNAME, "password": WRONG}})
        try:
            wait_for(lambda: (((k.ips(name) or {}).get("status") or {}).get("conditions") or [{}])[0].get(
                "reason") == "Synced", timeout=30, what="Ready")
            time.sleep(2)
            assert condition(k, name) == {}
            assert column(name) == ""
        finally:
            k.delete_ips(name, wait=True, timeout=60)
        running.cleanup_and_uninstall()
