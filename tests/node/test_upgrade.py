"""Upgrade from the previous release (0.1.0, `releases/0.1.0/`) to this chart, and roll back, under load.

0.1.0 rendered the webhook certificate itself (its Secret and the caBundle); this chart leaves
both to the controller and hands the old ones over (chart/templates/_handover.tpl). On a real
node, with a private registry reachable only through the hosts line hosts-updater writes:

1. `helm install` 0.1.0 from its archive (its images: `harness.previous`), values from
   `scripts/values` with the registry's hosts entry; two ImagePullSecrets made by hand (not
   Helm's, so the validating webhook reviews every edit of them);
2. under load (`continuity.Continuity`: a Pod of the private image every second, new namespaces,
   edits of the hand-made ImagePullSecrets, watches on Secrets and ServiceAccounts, the hosts file
   sampled every 50 ms): `helm upgrade --wait` to this chart, then `helm rollback --wait` to
   revision 1; after each step nothing was refused, deleted, recreated or unlinked, the hosts
   file answers the registry name exactly once, and the certificate Secret is the same object
   with the same caBundle;
3. at the end every Pod carried the entry and became Ready; then a password rotation (`helm
   upgrade` to this chart with the new password) reaches every served namespace and a fresh
   image is pulled with it.

The time of each step goes to `.local/results/node-upgrade.json` and is printed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from continuity import Continuity, Report

from harness import addon, images, node, oci, previous, registry, tools
from harness.addon import CHART_DIR
from node_support import tcr_like_registry
from support import REPO_ROOT, kubectl, wait_for

pytestmark = pytest.mark.upgrade

NAMESPACE = addon.NAMESPACE
IPS_NAME = "e2e-private"
SECRET = f"tcr.ips{IPS_NAME}"
HAND_MADE = ("upgrade-hand-a", "upgrade-hand-b")
USERNAME = "100012345678"
REPOSITORY = "team/app"
CERT_SECRET = "tcr-assistant-webhook-server-cert"
CONFIGURATION = "validatingwebhookconfiguration/tcr-assistant-validating-webhook-configuration"
DWELL = 20.0  # seconds of load after each step, with the new controller serving
RESULTS = REPO_ROOT / ".local" / "results" / "node-upgrade.json"


def pods_running(built: Sequence[images.BuiltImage]) -> list[str]:
    """The add-on's Pods (any phase) that run one of ``built``'s images."""
    refs = {image.ref for image in built}
    pods = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)["items"]
    return [pod["metadata"]["name"] for pod in pods if any(c["image"] in refs for c in pod["spec"]["containers"])]


def values(directory: Path, hostname: str, password: str) -> Path:
    """Values as a user writes them with `scripts/values` (password from a file, never echoed)."""
    password_file = directory / "password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    path = directory / "values.yaml"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "values"), "--registry", hostname,
                           "--name", IPS_NAME, "--username", USERNAME, "--password-file", str(password_file),
                           "--host", f"{hostname}={node.SERVICE_HOST_IP}", "-o", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr
    return path


def hand_made(name: str) -> str:
    """An ImagePullSecret made by hand (not Helm's): the validating webhook reviews each edit."""
    return json.dumps({"apiVersion": "tcr.tencentcloudcr.com/v1", "kind": "ImagePullSecret",
                       "metadata": {"name": name},
                       "spec": {"namespaces": "*", "serviceAccounts": "*",
                                "docker": {"server": "edits.tencentcloudcr.com", "username": "1", "password": "p"}}})


def linked(namespace: str, secret: str) -> bool:
    return secret in kubectl("-n", namespace, "get", "serviceaccount", "default", "-o",
                             "jsonpath={.imagePullSecrets[*].name}", check=False).stdout


def served_namespace(prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    wait_for(lambda: all(linked(name, s) for s in (SECRET, *(f"tcr.ips{h}" for h in HAND_MADE))), timeout=90,
             what=f"ServiceAccount default in {name} linked")
    return name


def certificate_state() -> dict[str, Any]:
    """The webhook certificate Secret (UID, hand-over annotation, data) and the caBundle."""
    secret = json.loads(kubectl("-n", NAMESPACE, "get", "secret", CERT_SECRET, "-o", "json").stdout)
    config = json.loads(kubectl("get", CONFIGURATION, "-o", "json").stdout)
    return {"uid": secret["metadata"]["uid"],
            "handed_over": (secret["metadata"].get("annotations") or {}).get("tcr.tencentcloudcr.com/handed-over-to"),
            "data": {k: v for k, v in secret["data"].items() if k != "ca.key"},
            "ca_bundle": config["webhooks"][0]["clientConfig"].get("caBundle")}


def no_gap_yet(report: Report, step: str) -> None:
    """Every violation the watches and loops found so far (Pods still starting are judged at the end)."""
    found = {name: lines for name, lines in report.violations().items() if name != "pods_not_ready"}
    assert not found, f"after {step}:\n" + "\n".join(
        f"{name}: {'; '.join(lines[:10])}" for name, lines in found.items())


def distributed_password(namespace: str, hostname: str) -> str | None:
    out = kubectl("-n", namespace, "get", "secret", SECRET, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    config = json.loads(base64.b64decode(json.loads(out.stdout)["data"][".dockerconfigjson"]))
    return str((config["auths"].get(hostname) or {}).get("password"))


def pod_ready(namespace: str, name: str) -> bool:
    pod = json.loads(kubectl("-n", namespace, "get", "pod", name, "-o", "json", check=False).stdout or "{}")
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


@pytest.fixture
def private_registry(node_cluster: node.NodeCluster, tmp_path: Path) -> Iterator[registry.PrivateRegistry]:
    with tcr_like_registry(node_cluster, tmp_path, USERNAME, "tcr-addon-e2e-registry-ca") as private:
        yield private


def test_upgrade_from_the_previous_release_and_rollback_refuse_nothing(
        node_cluster: node.NodeCluster, private_registry: registry.PrivateRegistry, tmp_path: Path) -> None:
    hostname = private_registry.hostname
    figures: dict[str, Any] = {"kubernetes": node_cluster.kubernetes,
                               "helm": tools.HELM_RELEASES[tools.helm_major()], "from": previous.VERSION}
    timings: dict[str, float] = {}

    def push(tag: str) -> str:
        image = oci.private_test_image(tmp_path / f"{tag}.tar", f"{hostname}/{REPOSITORY}:{tag}",
                                       nonce=secrets.token_hex(16))
        private_registry.push(image.archive, REPOSITORY, tag, via=private_registry.listen)
        return image.ref

    built = previous.build_previous()
    node_cluster.import_images(built)
    release = addon.NodeRelease(node_cluster, values_files=[values(tmp_path, hostname, private_registry.password)],
                                set_values=[*previous.image_values(built), "hostsUpdater.interval=2"],
                                chart=previous.CHART_ARCHIVE)
    earlier = kubectl("-n", NAMESPACE, "get", "secret", "-l", f"owner=helm,name={release.release}", "-o", "name")
    if earlier.stdout.strip():
        release.uninstall()  # an earlier run's release: start from nothing
    try:
        started = time.monotonic()
        release.install()
        timings[f"helm install {previous.VERSION} --wait"] = time.monotonic() - started
        image = push("v1")
        kubectl("apply", "-f", "-", input_text="\n---\n".join(hand_made(name) for name in HAND_MADE))
        served = [served_namespace("upg-a"), served_namespace("upg-b")]
        installed = certificate_state()
        assert installed["ca_bundle"] and installed["handed_over"] is None

        with Continuity(hostname=hostname, image=image, secret_names=[SECRET, *(f"tcr.ips{h}" for h in HAND_MADE)],
                        served_namespaces=served, edited_ips=HAND_MADE, hosts_file=node_cluster.hosts_file,
                        kubeconfig=node_cluster.kubeconfig, webhook_service=(NAMESPACE, addon.WEBHOOK_SERVICE)) as load:
            time.sleep(DWELL)
            no_gap_yet(load.report, f"{previous.VERSION} under load")

            step = f"helm upgrade {previous.VERSION} -> current --wait"
            # The previous release's controller closes its port at SIGTERM, while kube-proxy may
            # still send it a call for a moment: a call then meets "connection refused". Nothing in
            # the new chart can change how the old Pods stop (from this chart on they serve 5 s
            # more: preStop), so this one message is recorded, not failed, in this step only.
            with load.step(step, tolerate="connect: connection refused"):
                release.chart = CHART_DIR
                release.set_values = ["hostsUpdater.interval=2"]
                release.install()
                # helm --wait returns once the new Pods are ready, while the old ones may still be
                # stopping, which is when a call can be refused: the step lasts until they are gone.
                wait_for(lambda: not pods_running(built), timeout=120, interval=0.5,
                         what=f"the {previous.VERSION} Pods gone")
            upgraded = certificate_state()
            assert upgraded["uid"] == installed["uid"], "the certificate Secret was deleted and recreated"
            assert upgraded["handed_over"] == "tcr-assistant"
            assert upgraded["data"] == installed["data"] and upgraded["ca_bundle"] == installed["ca_bundle"]
            time.sleep(DWELL)
            no_gap_yet(load.report, step)

            step = "helm rollback 1 --wait"
            with load.step(step):
                release.helm("rollback", release.release, "1", "-n", NAMESPACE, "--wait", "--timeout", release.timeout)
            rolled_back = certificate_state()
            assert rolled_back["uid"] == installed["uid"] and rolled_back["handed_over"] is None
            assert rolled_back["data"] == installed["data"] and rolled_back["ca_bundle"] == installed["ca_bundle"]
            time.sleep(DWELL)
            no_gap_yet(load.report, step)

            report = load.finish()
            figures["load"] = report.figures()
            figures["helm_history"] = [f"{r['revision']} {r['app_version']} {r['status']}" for r in json.loads(
                release.helm("history", release.release, "-n", NAMESPACE, "-o", "json"))]
            report.assert_no_gap()

            # A password rotation (with this chart again) reaches every namespace served along the way.
            new_password = secrets.token_urlsafe(18)
            private_registry.set_password(new_password)
            started = time.monotonic()
            release.values_files = [values(tmp_path, hostname, new_password)]
            release.install()
            timings["helm upgrade (password rotation) --wait"] = time.monotonic() - started
            every = [*served, *load.created_namespaces]
            wait_for(lambda: all(distributed_password(ns, hostname) == new_password for ns in every), timeout=90,
                     what=f"the new password in all {len(every)} served namespaces")
            timings["rotation reaches every namespace"] = time.monotonic() - started
            fresh = push("v2")
            namespace = served_namespace("upg-rotated")
            kubectl("-n", namespace, "run", "app", f"--image={fresh}", "--restart=Never")
            wait_for(lambda: pod_ready(namespace, "app"), timeout=180, interval=0.5,
                     what="a fresh image pulled with the rotated password")
            kubectl("delete", "namespace", namespace, "--wait=false")
            figures["rotated_namespaces"] = len(every)
    finally:
        figures["step_seconds"] = {**{k: round(v, 1) for k, v in timings.items()},
                                   **(figures.get("load") or {}).get("step_seconds", {})}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\n[node] upgrade figures: {json.dumps(figures)}")
        with contextlib.suppress(AssertionError):
            kubectl("delete", "imagepullsecrets.tcr.tencentcloudcr.com", *HAND_MADE, "--ignore-not-found",
                    "--timeout=120s")
        with contextlib.suppress(addon.AddonError):
            release.uninstall()
