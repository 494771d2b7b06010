"""The release path on a real node: the chart installed from an OCI registry, its images pulled from it.

A private registry (Debian's distribution, htpasswd authentication, TLS from our own CA) runs
inside the node's network namespace. The project's release code, what `make package` and
`make publish REGISTRY=…` run (`release.package`, `release.publish`), pushes the chart archive
and both images there. Real helm then installs `oci://<registry>/tcr-addon/tcr-addon` with
`--wait`, both images' registry and repository pointed at the registry (the tag is the chart's
appVersion, the one `publish` pushed), pull policy Always and, as the chart's
`imagePullSecrets`, a kubernetes.io/dockerconfigjson Secret created beforehand: the kubelet
really pulls both images, with that Secret.

The registry's name has to resolve on the node before anything of the add-on runs. The node
has no DNS, and the hosts-updater, which writes such lines, is itself an image from that
registry: with its line as the only one, every pull (controller, hosts-updater, and at
uninstall the pre-delete cleanup Job) fails with "lookup <name> on 127.0.0.1:53", so
`helm install --wait` runs into its timeout and `helm uninstall` hangs on its hook. So the node
gets a hosts line of its own first (as a node image or its boot configuration would give it),
next to containerd's trust of the registry's CA, and `global.hosts` names the registry for the
hosts-updater as well. Everything is taken away again: the node's hosts file ends byte for byte
as it was.

The module runs on a node of its own, not on the session's `node_cluster`: the published images
are the very images the other node tests load into their node (same configuration digest, so
the same image ID), and the kubelet remembers, for as long as it runs, which Secret pulled an
image ID. After this pull it would refuse those tests' Pods (pull policy Never, no Secret) with
ErrImageNeverPull, and their `helm install --wait` and `helm uninstall` would hang.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import addon, cluster, node, pki, registry, release, tools
from node_support import admin_kubeconfig_inside, node_knows_registry
from support import REPO_ROOT, kubectl, pointed_at, wait_for

pytestmark = pytest.mark.helm_paths

NAMESPACE = addon.NAMESPACE
PATH = "tcr-addon"  # the path under the registry's host that the release is published to
PULL_SECRET = "tcr-addon-images"  # the chart's `imagePullSecrets`: the add-on's own images
IPS_NAME = "oci-install"
SECRET = f"tcr.ips{IPS_NAME}"  # what the add-on distributes to every namespace
USERNAME = "100012345678"
COMPONENTS = {"tcr-assistant": "controller", "hosts-updater": "hosts-updater"}  # repository: Pod label
RESULTS = REPO_ROOT / ".local" / "results" / "node-oci-install.json"


@pytest.fixture(scope="module")
def oci_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[node.NodeCluster]:
    """A node for this module alone (see above), stopped with everything on it after the module."""
    with cluster.running(Path(tmp_path_factory.mktemp("oci-node")), node.NodeCluster) as plane:
        assert isinstance(plane, node.NodeCluster)
        yield plane


@pytest.fixture
def private_registry(oci_node: node.NodeCluster, tmp_path: Path) -> Iterator[registry.PrivateRegistry]:
    with pointed_at(oci_node), registry.PrivateRegistry(
            tmp_path / "registry", hostname=f"tcr-{secrets.token_hex(4)}.tencentcloudcr.com",
            listen=f"{node.SERVICE_HOST_IP}:443", ca=pki.CertificateAuthority("tcr-addon-oci-install-ca"),
            username=USERNAME, password=secrets.token_urlsafe(18), command_prefix=oci_node.command_prefix(),
            tie_to_parent=True) as private:
        yield private


def manifest_digest(plane: node.NodeCluster, private: registry.PrivateRegistry, auth: Path, ref: str) -> str:
    """The digest the registry serves for ``ref`` (skopeo, inside the node)."""
    skopeo = shutil.which("skopeo") or "skopeo"
    out = addon.run([*plane.command_prefix(), skopeo, "inspect", "--cert-dir", str(private.cert_dir),
                     "--authfile", str(auth), "--format", "{{.Digest}}", f"docker://{ref}"], timeout=120)
    return out.strip()


def pull_secret(private: registry.PrivateRegistry) -> str:
    """A kubernetes.io/dockerconfigjson Secret for the registry (applied from stdin, never on a command line)."""
    auth = base64.b64encode(f"{private.username}:{private.password}".encode()).decode()
    config = {"auths": {private.address: {"username": private.username, "password": private.password,
                                          "auth": auth}}}
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": PULL_SECRET, "namespace": NAMESPACE},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    })


def write_values(private: registry.PrivateRegistry, path: Path) -> Path:
    """Both images from the registry (the chart's appVersion tag), pulled every time with our Secret."""
    values: dict[str, Any] = {
        "imagePullSecrets": [{"name": PULL_SECRET}],
        "global": {
            "hosts": [{"domain": private.hostname, "ip": private.listen_host}],
            "imagePullSecretsCrs": [{"name": IPS_NAME, "namespaces": "*", "serviceAccounts": "*", "type": "docker",
                                     "dockerServer": private.address, "dockerUsername": private.username,
                                     "dockerPassword": private.password}],
        },
        "hostsUpdater": {"interval": 2},
    }
    for repository, key in release.VALUES_KEYS.items():
        values.setdefault(key, {})["image"] = {"registry": private.address, "repository": f"{PATH}/{repository}",
                                               "pullPolicy": "Always"}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    path.chmod(0o600)  # it holds the registry password
    return path


def pods(component: str) -> list[dict[str, Any]]:
    out = kubectl("-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/component={component}", "-o",
                  "json").stdout
    return [pod for pod in json.loads(out)["items"] if not pod["metadata"].get("deletionTimestamp")]


def diagnosis(plane: node.NodeCluster, private: registry.PrivateRegistry) -> str:
    """What the node says about the release's Pods: describe, events, containerd's and the kubelet's lines."""
    parts = [kubectl("-n", NAMESPACE, "describe", "pods", check=False).stdout[-6000:],
             kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-3000:]]
    for component in ("containerd", "kubelet"):
        log = plane.directory / f"{component}.log"
        lines = [line for line in log.read_text(errors="replace").splitlines() if private.hostname in line]
        parts.append(f"{component}.log, lines naming the registry:\n" + "\n".join(lines[-8:]))
    return "\n\n".join(parts)


def installed() -> bool:
    out = kubectl("-n", NAMESPACE, "get", "secrets", "-l", "owner=helm,name=tcr-addon", "-o", "name",
                  check=False).stdout
    return bool(out.strip())


def test_chart_and_both_images_are_installed_from_the_registry(
        oci_node: node.NodeCluster, private_registry: registry.PrivateRegistry, tmp_path: Path) -> None:
    plane, private = oci_node, private_registry
    prefix = plane.command_prefix()
    figures: dict[str, Any] = {}
    hosts_before = plane.hosts_file.read_text()
    assert private.hostname not in hosts_before
    created_namespace = NAMESPACE not in kubectl("get", "namespaces", "-o", "name").stdout
    app_namespace = f"oci-{secrets.token_hex(3)}"
    target = f"{private.address}/{PATH}"
    with node_knows_registry(plane, private) as hosts_line, private.auth_file() as auth:
        try:
            started = time.monotonic()
            pkg = release.package(tmp_path / "dist")
            figures["package_s"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            pushed = release.publish(target, pkg, ca_dir=private.cert_dir, authfile=auth, prefix=prefix)
            figures["publish_s"] = round(time.monotonic() - started, 1)
            assert pushed[0] == f"oci://{target}/tcr-addon:{pkg.version}"
            digests = {repository: manifest_digest(plane, private, auth, f"{target}/{repository}:{pkg.app_version}")
                       for repository, _ in pkg.images}

            if created_namespace:
                kubectl("create", "namespace", NAMESPACE)
            kubectl("apply", "-f", "-", input_text=pull_secret(private))
            values = write_values(private, tmp_path / "values.yaml")
            # helm runs inside the node: the registry is reachable (and its name resolves) only there.
            argv = [*prefix, str(tools.helm_path()), "install", addon.RELEASE, f"oci://{target}/tcr-addon",
                    "--version", pkg.version, "-n", NAMESPACE,
                    "--kubeconfig", str(admin_kubeconfig_inside(plane, tmp_path / "inside.kubeconfig")),
                    "--registry-config", str(auth), "--ca-file", str(private.ca_file), "-f", str(values),
                    "--wait", "--timeout", "3m"]
            started = time.monotonic()
            try:
                addon.run(argv, timeout=240)
            except addon.AddonError as error:
                raise AssertionError(f"{error}\n\n{diagnosis(plane, private)}") from None
            figures["helm_install_wait_s"] = round(time.monotonic() - started, 1)

            for repository, component in COMPONENTS.items():
                [pod] = pods(component)
                ready = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}.get("Ready")
                assert ready == "True", f"{component} Pod {pod['metadata']['name']} is not Ready"
                assert [ref["name"] for ref in pod["spec"].get("imagePullSecrets", [])] == [PULL_SECRET]
                [status] = pod["status"]["containerStatuses"]
                assert status["image"] == f"{target}/{repository}:{pkg.app_version}", status
                assert status["imageID"] == f"{target}/{repository}@{digests[repository]}", status
                events = json.loads(kubectl("-n", NAMESPACE, "get", "events", "-o", "json", "--field-selector",
                                            f"involvedObject.name={pod['metadata']['name']},reason=Pulled").stdout)
                assert any(e["message"].startswith(f'Successfully pulled image "{target}/{repository}:')
                           for e in events["items"]), "the kubelet pulled it (pullPolicy Always), not a local copy"
            assert hosts_line in plane.hosts_file.read_text()

            # The add-on runs: a namespace created now gets the registry's Secret and its default
            # ServiceAccount is linked to it.
            started = time.monotonic()
            kubectl("create", "namespace", app_namespace)
            wait_for(lambda: SECRET in kubectl("-n", app_namespace, "get", "serviceaccount", "default", "-o",
                                               "jsonpath={.imagePullSecrets[*].name}", check=False).stdout,
                     timeout=60, what=f"ServiceAccount default in {app_namespace} linked to {SECRET}")
            figures["namespace_to_linked_s"] = round(time.monotonic() - started, 1)
            secret = json.loads(kubectl("-n", app_namespace, "get", "secret", SECRET, "-o", "json").stdout)
            assert secret["type"] == "kubernetes.io/dockerconfigjson"
            config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
            entry = config["auths"][private.address]
            assert (entry["username"], entry["password"]) == (private.username, private.password)

            started = time.monotonic()
            addon.NodeRelease(plane, timeout="2m").uninstall()  # the pre-delete Job pulls from the registry too
            figures["helm_uninstall_s"] = round(time.monotonic() - started, 1)
            assert not installed()
            leftovers = [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in json.loads(
                kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"] if s["metadata"]["name"] == SECRET]
            assert leftovers == []
            assert plane.hosts_file.read_text() == hosts_before + hosts_line, "the hosts-updater's lines are gone"
        finally:
            if installed():  # a failure above: take the release away without waiting for what cannot run
                with contextlib.suppress(addon.AddonError):
                    addon.NodeRelease(plane).helm("uninstall", addon.RELEASE, "-n", NAMESPACE, "--no-hooks",
                                                    "--wait", "--timeout", "1m")
            kubectl("delete", "namespace", app_namespace, "--ignore-not-found", "--wait=true", check=False)
            kubectl("-n", NAMESPACE, "delete", "secret", PULL_SECRET, "--ignore-not-found", check=False)
            if created_namespace:
                kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", check=False)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
            print(f"\n[node] oci install figures: {json.dumps(figures)}")

    assert plane.hosts_file.read_text() == hosts_before, "the node's hosts file is as it was"
    assert not (plane.certs_dir / private.address).exists()
