"""`make package` and `make publish`: the chart archive and both images, pushed to a real
authenticated TLS registry, then pulled back by helm and skopeo."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness import registry as registries
from harness import release
from support import helm

RegistryFactory = Callable[..., registries.PrivateRegistry]


@pytest.mark.cluster  # release.package builds the images with a Docker engine
def test_package_then_publish_to_a_registry_and_install_from_it(tmp_path: Path,
                                                                 make_registry: RegistryFactory) -> None:
    registry = make_registry()
    pkg = release.package(tmp_path / "dist")
    version, app_version = release.chart_versions()
    assert pkg.chart.name == f"tcr-addon-{version}.tgz" and pkg.app_version == app_version
    with tarfile.open(pkg.chart) as archive:
        assert yaml.safe_load(archive.extractfile("tcr-addon/Chart.yaml").read())["version"] == version  # type: ignore[union-attr]
    assert [repository for repository, _ in pkg.images] == ["tcr-assistant", "hosts-updater"]

    target = f"{registry.listen}/tcr-addon"
    with registry.auth_file(registry.listen) as auth:
        pushed = release.publish(target, pkg, ca_dir=registry.cert_dir, authfile=auth)
        assert pushed == [f"oci://{target}/tcr-addon:{version}", f"{target}/tcr-assistant:{app_version}",
                          f"{target}/hosts-updater:{app_version}"]
        # helm takes the chart back from the registry …
        (tmp_path / "pulled").mkdir()
        helm("pull", f"oci://{target}/tcr-addon", "--version", version, "--ca-file", str(registry.ca_file),
             "--registry-config", str(auth), "--destination", str(tmp_path / "pulled"))
        pulled = tmp_path / "pulled" / pkg.chart.name
        assert pulled.read_bytes() == pkg.chart.read_bytes()
        # … and a client finds each image under the chart's appVersion
        for repository, _ in pkg.images:
            inspect = subprocess.run(
                [shutil.which("skopeo") or "skopeo", "inspect", "--cert-dir", str(registry.cert_dir),
                 "--authfile", str(auth), f"docker://{target}/{repository}:{app_version}"],
                capture_output=True, text=True, timeout=120)
            assert inspect.returncode == 0, inspect.stderr
            assert json.loads(inspect.stdout)["Digest"].startswith("sha256:")
    # the documented install command points both workloads at those images
    command = release.install_command(target, pkg)
    assert command.startswith(f"helm install tcr-addon oci://{target}/tcr-addon --version {version} ")
    sets = [part for part in command.split() if "=" in part and part.count(".image.") == 1]
    rendered = helm("template", "tcr-addon", str(pulled), "-n", "tcr-assistant-system",
                    *[arg for s in sets for arg in ("--set", s)], "--set", "hostsUpdater.enabled=true").stdout
    images = {line.split("image:", 1)[1].strip().strip('"') for line in rendered.splitlines()
              if line.strip().startswith("image:")}
    assert {f"{target}/tcr-assistant:{app_version}", f"{target}/hosts-updater:{app_version}"} <= images


def test_publish_needs_a_registry(tmp_path: Path) -> None:
    pkg = release.Package(tmp_path / "c.tgz", "1", "1", ())
    for bad in ("", "https://example.com/x", "/path"):
        try:
            release.publish(bad, pkg)
        except release.ReleaseError as error:
            assert "host[:port]/path" in str(error)
        else:
            raise AssertionError(f"{bad!r} accepted")
