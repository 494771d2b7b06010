"""From the original TKE add-on to this chart on a real node, while Pods keep starting.

The original (a stand-in with its object names and shapes: `harness.original`) runs: its
controller Deployment serves the validating webhook with its own certificate and distributes;
20 namespaces hold hand-made ImagePullSecrets' Secrets and links; the node's hosts file has a line
for the registry that our updater did not write. Under load (`continuity.Continuity`: a Pod every
second in served namespaces, old and new, pulling a private image; ImagePullSecret edits through
the webhook; watches on Secrets and ServiceAccounts; the hosts file read every 50 ms), the user:

1. runs `scripts/migrate` (dry run) and `scripts/migrate --apply` (prepare);
2. runs `helm install` of the chart (`--wait`): the new controller serves its webhooks, but the
   Lease is held for the old one, so it writes nothing;
3. runs `scripts/migrate --apply` again (finish): the old controller's Pods stop, then the new
   controller leads;
4. rotates the password: the new password reaches every namespace (the new controller is in charge);
5. hands the ImagePullSecrets to the chart's values (`scripts/values --from-cluster`, `scripts/migrate
   --apply -f`, `helm upgrade`).

Afterwards: every Pod carried the entry and became Ready, no Secret was deleted or recreated, no
link removed, no write refused, one answer for the registry name in the hosts file throughout.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from continuity import Continuity, hosts_answers
from migration_support import Original, distributed_uids, install_original, migrate, registry_for

from harness import addon, images, node, oci, registry, tools
from node_support import tcr_like_registry
from support import REPO_ROOT, kubectl, pointed_at, wait_for

NS = addon.NAMESPACE
REPOSITORY = "team/app"
NAMESPACES = 20
RESULTS = REPO_ROOT / ".local" / "results" / "node-migration.json"


@pytest.fixture(scope="module")
def private_registry(node_cluster: node.NodeCluster, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[registry.PrivateRegistry, Path]]:
    directory = Path(tmp_path_factory.mktemp("migration"))
    with tcr_like_registry(node_cluster, directory, "100012345678", "tcr-addon-migration-registry-ca") as private:
        yield private, directory


def distributed_password(namespace: str, name: str, server: str) -> str | None:
    out = kubectl("-n", namespace, "get", "secret", name, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    config = json.loads(base64.b64decode(json.loads(out.stdout)["data"][".dockerconfigjson"]))
    return str(config["auths"][server]["password"])


def lease() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(kubectl("-n", NS, "get", "lease", "tcr-assistant-leader", "-o",
                                              "json").stdout)["spec"]
    return spec


def labelled_by_us(secret_name: str) -> list[str]:
    items = json.loads(kubectl("get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=tcr-assistant",
                               "-o", "json").stdout)["items"]
    return [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in items
            if s["metadata"]["name"] == secret_name]


def secret_versions(names: list[str]) -> dict[str, str]:
    """"ns/name" -> resourceVersion of the distributed Secrets that existed before the new controller."""
    items = json.loads(kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"]
    return {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s["metadata"]["resourceVersion"]
            for s in items if s["metadata"]["name"] in names and s["metadata"]["namespace"].startswith("mig-")}


def test_the_original_add_on_hands_over_with_no_failed_pull(
        node_cluster: node.NodeCluster, private_registry: tuple[registry.PrivateRegistry, Path]) -> None:
    private, directory = private_registry
    hostname = private.hostname
    figures: dict[str, Any] = {}
    image = oci.private_test_image(directory / "app.tar", f"{hostname}/{REPOSITORY}:v1", nonce=secrets.token_hex(16))
    private.push(image.archive, REPOSITORY, "v1", via=private.listen)

    built = images.build_images()
    node_cluster.import_images(built)
    controller_image, hosts_image = (f"{b.registry}/{b.repository}:{b.tag}" for b in built)

    served = registry_for(hostname, private.password)
    other = registry_for(f"tcr-{secrets.token_hex(3)}-other.tencentcloudcr.com")
    prefix = f"mig-{secrets.token_hex(2)}"  # this test's namespaces: the stand-in's and none other
    # The original's hosts line, written without our markers.
    hosts_before = node_cluster.hosts_file.read_bytes()
    foreign_line = f"{node.SERVICE_HOST_IP} {hostname}\n".encode()
    node_cluster.hosts_file.write_bytes(hosts_before + foreign_line)
    try:

        started = time.monotonic()
        original: Original = install_original(image=controller_image, hosts_image=hosts_image, namespaces=NAMESPACES,
                                              hosts=[(hostname, node.SERVICE_HOST_IP)], registries=[served, other],
                                              prefix=prefix)
        kubectl("-n", NS, "rollout", "status", "deployment/tcr-assistant-controller-manager", "--timeout=180s")
        figures["original_install_s"] = round(time.monotonic() - started, 1)
        secret = f"tcr.ips{served.name}"
        assert labelled_by_us(secret) == [], "nothing of ours before the migration"

        values = directory / "values.yaml"
        values.write_text(yaml.safe_dump({"global": {"hosts": [{"domain": hostname, "ip": node.SERVICE_HOST_IP}]},
                                          "hostsUpdater": {"interval": 2}}))
        release = addon.NodeRelease(node_cluster, values_files=[values])
        load = Continuity(hostname=hostname, image=image.ref, secret_names=original.secret_names,
                          served_namespaces=original.namespaces, edited_ips=[served.name, other.name],
                          hosts_file=node_cluster.hosts_file, webhook_service=(NS, addon.WEBHOOK_SERVICE))
        with load:
            time.sleep(5)  # the original in charge, under load
            with load.step("scripts/migrate (dry run)"):
                dry = migrate("-f", str(values))
            assert dry.returncode == 0, dry.stdout + dry.stderr
            figures["dry_run"] = dry.stdout
            with load.step("scripts/migrate --apply (prepare)"):
                prepared = migrate("--apply", "-f", str(values))
            assert prepared.returncode == 0, prepared.stdout + prepared.stderr
            assert lease()["holderIdentity"] == "tcr-addon-migrate"
            prepared_versions = secret_versions(original.secret_names)

            with load.step("helm install --wait"):
                release.install()
            assert lease()["holderIdentity"] == "tcr-addon-migrate", "the new controller waits for the old one"
            assert secret_versions(original.secret_names) == prepared_versions, \
                "the new controller wrote nothing while the old one ran"
            old_pods = json.loads(kubectl("-n", NS, "get", "pods", "-l", "control-plane=controller-manager",
                                          "-o", "json").stdout)["items"]
            assert old_pods, "the old controller still runs, behind the chart's webhook Service"

            with load.step("scripts/migrate --apply (finish)"):
                finished = migrate("--apply", "-f", str(values))
            stopped = datetime.datetime.now(datetime.UTC)
            assert finished.returncode == 0, finished.stdout + finished.stderr
            assert kubectl("-n", NS, "get", "pods", "-l", "control-plane=controller-manager", "-o",
                           "name").stdout.strip() == ""
            wait_for(lambda: (lease().get("holderIdentity") or "").startswith("tcr-assistant-controller-manager-"),
                     timeout=60, what="the new controller leading")
            acquired = datetime.datetime.fromisoformat(lease()["acquireTime"].replace("Z", "+00:00"))
            assert acquired >= stopped - datetime.timedelta(seconds=2), "it led only once the old one had stopped"
            assert "phase: done" in migrate("-f", str(values)).stdout

            with load.step("password rotation"):
                new_password = secrets.token_urlsafe(18)
                private.set_password(new_password)
                kubectl("patch", "imagepullsecret", served.name, "--type=merge",
                        "-p", json.dumps({"spec": {"docker": {"password": new_password}}}))
                for namespace in [*original.namespaces, *load.created_namespaces]:
                    def rotated(ns: str = namespace) -> bool:
                        return distributed_password(ns, secret, hostname) == new_password
                    wait_for(rotated, timeout=60, what=f"the new password in {namespace}")

            with load.step("ImagePullSecrets into the chart's values"):
                full = directory / "values-full.yaml"
                proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "values"), "--from-cluster",
                                       "--host", f"{hostname}={node.SERVICE_HOST_IP}", "-o", str(full)],
                                      capture_output=True, text=True, timeout=120, check=False)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                assert new_password not in proc.stdout + proc.stderr
                handed = migrate("--apply", "-f", str(full))
                assert handed.returncode == 0, handed.stdout + handed.stderr
                release.values_files = [full, values]
                release.install()
            figures["ips_after_values"] = json.loads(kubectl("get", "imagepullsecret", served.name, "-o", "json")
                                                     .stdout)["metadata"]["labels"]
            time.sleep(5)
            report = load.finish()
        figures.update(report.figures())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\n[node] migration figures: {json.dumps({k: v for k, v in figures.items() if k != 'dry_run'})}")
        print(figures["dry_run"])
        report.assert_no_gap()
        assert distributed_uids(original.secret_names).items() >= original.uids.items(), "same Secrets, same UIDs"
        assert figures["ips_after_values"].get("app.kubernetes.io/managed-by") == "Helm"
        assert hosts_answers(node_cluster.hosts_file.read_text(), hostname) == 1
    finally:
        cleanup(node_cluster, foreign_line, [served.name, other.name], prefix)


def cleanup(cluster: node.NodeCluster, foreign_line: bytes, ips: list[str], prefix: str) -> None:
    """Leave the node as the next suites expect it: this test's ImagePullSecrets deleted while a
    controller still runs (their finalizers), the release uninstalled, this test's namespaces, the
    CRD the stand-in created and the hosts line gone."""
    with pointed_at(cluster):
        kubectl("delete", "imagepullsecret", *ips, "--ignore-not-found", "--timeout=120s", check=False)
        subprocess.run([str(tools.helm_path()), "uninstall", "tcr-addon", "-n", NS, "--wait", "--timeout", "5m"],
                       capture_output=True, text=True, timeout=400, check=False)
        for item in json.loads(kubectl("get", "namespaces", "-o", "json").stdout)["items"]:
            if item["metadata"]["name"].startswith(prefix):
                kubectl("delete", "namespace", item["metadata"]["name"], "--wait=false", check=False)
        kubectl("delete", "namespace", NS, "--timeout=120s", check=False)
        kubectl("delete", "crd", "imagepullsecrets.tcr.tencentcloudcr.com", "--ignore-not-found", "--timeout=120s",
                check=False)
    current = cluster.hosts_file.read_bytes()
    cluster.hosts_file.write_bytes(current.replace(foreign_line, b""))
