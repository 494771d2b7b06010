"""Reading a kubeconfig and the in-cluster configuration (no API server: the controller's
integration tests use the transport for real)."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
import yaml

from tcr_assistant.k8s import apiclient
from tcr_assistant.k8s.apiclient import ApiClient, ConfigError, Credentials


def kubeconfig(tmp_path: Path, user: dict[str, object], cluster: dict[str, object] | None = None,
               current: str = "c") -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}},
                     {"name": "other", "context": {"cluster": "k2", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": cluster or {"server": "https://10.0.0.1:6443/",
                                                          "certificate-authority": "ca.crt"}},
                     {"name": "k2", "cluster": {"server": "https://10.0.0.2:6443"}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_files_relative_to_the_kubeconfig_and_inline_data(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("CA PEM")
    (tmp_path / "client.crt").write_text("CERT PEM")
    key = base64.b64encode(b"KEY PEM").decode()
    creds = apiclient.from_kubeconfig(kubeconfig(tmp_path, {"client-certificate": "client.crt",
                                                            "client-key-data": key}))
    assert creds.server == "https://10.0.0.1:6443"
    assert (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem) == ("CA PEM", "CERT PEM", "KEY PEM")
    assert "KEY PEM" not in repr(creds)
    other = apiclient.from_kubeconfig(kubeconfig(tmp_path, {"token": "t0k"}), context="other")
    assert other.server == "https://10.0.0.2:6443" and other.token == "t0k" and other.ca_pem is None
    assert "t0k" not in repr(other)


def test_plugins_and_missing_parts_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exec or auth-provider plugin"):
        apiclient.from_kubeconfig(kubeconfig(tmp_path, {"exec": {"command": "x"}}))
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        apiclient.from_kubeconfig(kubeconfig(tmp_path, {"token": "t"}, current="nope"))
    with pytest.raises(ConfigError, match="has no server"):
        apiclient.from_kubeconfig(kubeconfig(tmp_path, {"token": "t"}, cluster={"insecure-skip-tls-verify": True}))
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        apiclient.from_kubeconfig(tmp_path / "missing")


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("projected\n")
    (tmp_path / "ca.crt").write_text("CA PEM")
    creds = apiclient.in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert creds.server == "https://[fd00::1]:443" and creds.ca_pem == "CA PEM"
    assert creds.token_file == str(tmp_path / "token")
    with pytest.raises(ConfigError, match="not running in a Pod"):
        apiclient.in_cluster(tmp_path, {})


def test_load_prefers_the_flag_then_in_cluster_then_kubeconfig_env(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = kubeconfig(tmp_path, {"token": "t"}, cluster={"server": "http://127.0.0.1:1"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", f"{path}{os.pathsep}{tmp_path / 'second'}")
    assert apiclient.load().server == "http://127.0.0.1:1"
    assert apiclient.load(str(path)).server == "http://127.0.0.1:1"


def test_the_token_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    client = ApiClient(Credentials(server="http://127.0.0.1:1", token_file=str(token)))
    assert client._bearer() == "first"
    token.write_text("second")
    assert client._bearer() == "first"  # cached for a while
    monkeypatch.setattr(time, "monotonic", lambda: 1e12)
    assert client._bearer() == "second"
