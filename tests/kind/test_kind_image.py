"""The kind node image's recipe: what it carries and what kind is told, checked without building it."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import pytest
import yaml

from harness import e2e_kind, kind_image, oci, tools


@pytest.fixture(scope="module")
def kind_source() -> kind_image.Inputs:
    """The kind module's own files (downloaded with kind by `make setup`)."""
    return kind_image.Inputs(kind_image.kind_module_dir(), (), "0" * 64)


def test_the_containerd_config_is_kinds_with_our_sandbox_image(kind_source: kind_image.Inputs) -> None:
    original = (kind_source.kind_dir / "images/base/files/etc/containerd/config.toml").read_text()
    changed = kind_image.containerd_config(original, oci.PAUSE_REF)
    assert f'sandbox_image = "{oci.PAUSE_REF}"' in changed and "restrict_oom_score_adj = true" in changed
    assert len(changed.splitlines()) == len(original.splitlines())
    with pytest.raises(kind_image.KindImageError, match="sandbox_image"):
        kind_image.containerd_config(original.replace("sandbox_image", "sandbox"), oci.PAUSE_REF)


def test_kinds_preloaded_images_are_read_from_its_source(kind_source: kind_image.Inputs) -> None:
    wanted = kind_source.preloaded_by_kind()
    assert set(wanted) == {"kindnetdImage", "storageProvisionerImage", "storageHelperImage"}
    assert all(ref.startswith("docker.io/kindest/") for ref in wanted.values())


def test_placeholders_are_exactly_what_no_archive_holds() -> None:
    wanted = ["registry.k8s.io/kube-apiserver:v1", "registry.k8s.io/etcd:3.7.0-0", "docker.io/kindest/kindnetd:v1",
              "registry.k8s.io/etcd:3.7.0-0"]
    assert kind_image.placeholders(wanted, ["registry.k8s.io/kube-apiserver:v1"]) == [
        "docker.io/kindest/kindnetd:v1", "registry.k8s.io/etcd:3.7.0-0"]
    assert kind_image.placeholders(wanted, wanted) == []


def test_cri_base_spec_adds_the_product_files_hook_and_drops_rlimits() -> None:
    default: dict[str, Any] = {"process": {"rlimits": [{"type": "RLIMIT_NOFILE"}], "args": ["sh"]},
               "hooks": {"createContainer": [{"path": "/other"}]}}
    spec = kind_image.cri_base_spec(default)
    assert spec["hooks"] == {"createContainer": [{"path": "/other"}, {"path": "/kind/bin/mount-product-files.sh"}]}
    assert spec["process"] == {"args": ["sh"]}
    assert "rlimits" in default["process"], "the input is left alone"


def test_the_cluster_config_names_the_images_the_node_holds() -> None:
    """kubeadm names etcd `<imageRepository>/etcd:<imageTag>` and coredns `<imageRepository>/coredns:<imageTag>`
    (a repository of one's own); those must be the images baked in, or the node would pull."""
    config = yaml.safe_load(kind_image.cluster_config("x"))
    assert config["networking"] == {"ipFamily": "ipv4", "disableDefaultCNI": True, "podSubnet": kind_image.POD_SUBNET}
    cluster, kubelet = (yaml.safe_load(patch) for patch in config["kubeadmConfigPatches"])
    etcd = cluster["etcd"]["local"]
    assert f"{etcd['imageRepository']}/etcd:{etcd['imageTag']}" == kind_image.ETCD_REF
    assert f"{cluster['dns']['imageRepository']}/coredns:{cluster['dns']['imageTag']}" == kind_image.COREDNS_REF
    assert kubelet == {"kind": "KubeletConfiguration", "failCgroupV1": False}
    conflist = json.loads(kind_image.bridge_conflist())
    node_range = ipaddress.IPv4Network(conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    assert node_range.subnet_of(ipaddress.IPv4Network(kind_image.POD_SUBNET))
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["bridge", "portmap"]
    assert set(kind_image.CNI_PLUGINS) >= {"bridge", "host-local", "portmap"}


def test_the_cache_key_moves_with_each_input(kind_source: kind_image.Inputs) -> None:
    other_sources = kind_image.Inputs(kind_source.kind_dir, ("deb http://other bookworm main",), "0" * 64)
    other_pause = kind_image.Inputs(kind_source.kind_dir, (), "1" * 64)
    keys = {kind_source.key, other_sources.key, other_pause.key}
    assert len(keys) == 3
    assert kind_source.ref == f"{kind_image.NODE_REPOSITORY}:{tools.KUBERNETES_VERSION}-{kind_source.key}"


def test_a_node_not_ready_or_at_another_version_fails_the_run() -> None:
    def nodes(ready: str, version: str) -> dict[str, Any]:
        return {"items": [{"metadata": {"name": "n"}, "status": {
            "conditions": [{"type": "Ready", "status": ready}], "nodeInfo": {"kubeletVersion": version}}}]}

    e2e_kind.check_nodes(nodes("True", "v1.37.2"), "v1.37.2")
    e2e_kind.check_nodes(nodes("True", "v1.35.0"), None)  # kind's own image on a machine with Docker
    for bad, wanted in ((nodes("False", "v1.37.2"), "v1.37.2"), (nodes("True", "v1.36.3"), "v1.37.2"),
                        ({"items": []}, None)):
        with pytest.raises(e2e_kind.KindRunError):
            e2e_kind.check_nodes(bad, wanted)


def test_the_api_port_is_read_from_the_kubeconfig_and_a_closed_port_is_seen_closed() -> None:
    assert e2e_kind.api_port("clusters:\n- cluster:\n    server: https://127.0.0.1:40123\n") == 40123
    with pytest.raises(e2e_kind.KindRunError):
        e2e_kind.api_port("server: https://10.0.0.1:6443\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not e2e_kind.unreachable_from_host(port)
    assert e2e_kind.unreachable_from_host(port)
