"""Releases: ``make package`` and ``make publish REGISTRY=host[:port]/path``.

``package`` writes ``dist/``: the chart archive (``helm package``, version from Chart.yaml) and
the two images as docker-save archives, to be tagged with the chart's appVersion (the tag the
chart's values use by default). ``publish`` pushes all three to an OCI registry: the chart with
``helm push``, the images with skopeo. Credentials and CAs are the clients' own (``helm
registry login``, ``skopeo login``) unless given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import REPO_ROOT, engine, images, tools
from harness.addon import AddonError, run

CHART_DIR = REPO_ROOT / "chart"
DIST = REPO_ROOT / "dist"
VALUES_KEYS = {"tcr-assistant": "controller", "hosts-updater": "hostsUpdater"}


class ReleaseError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[release] {message}", flush=True)


@dataclass(frozen=True)
class Package:
    chart: Path  # dist/tcr-addon-<version>.tgz
    version: str  # the chart's
    app_version: str  # the images' tag
    images: tuple[tuple[str, Path], ...]  # (repository, docker-save archive)


def chart_versions(chart_dir: Path = CHART_DIR) -> tuple[str, str]:
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    return str(meta["version"]), str(meta.get("appVersion") or meta["version"])


def package(out: Path = DIST) -> Package:
    version, app_version = chart_versions()
    out.mkdir(parents=True, exist_ok=True)
    run([str(tools.helm_path()), "package", str(CHART_DIR), "--destination", str(out)])
    chart = out / f"tcr-addon-{version}.tgz"
    if not chart.exists():
        raise ReleaseError(f"helm package wrote no {chart.name}")
    archives = []
    for built in images.build_images():
        target = out / f"{built.repository}-{app_version}.tar"
        shutil.copyfile(built.archive, target)
        archives.append((built.repository, target))
    log(f"chart {chart.name}; images {', '.join(f'{r}:{app_version}' for r, _ in archives)} in {out}")
    return Package(chart, version, app_version, tuple(archives))


def publish(registry: str, pkg: Package, *, ca_dir: Path | None = None, authfile: Path | None = None,
            prefix: Sequence[str] = ()) -> list[str]:
    """Push ``pkg`` under ``registry`` (host[:port]/path); returns the references pushed.

    ``ca_dir``: a directory holding the registry's ``ca.crt`` (else the system's trust store);
    ``authfile``: a docker/containers auth file with the registry's credentials (both clients
    read that format; else their own logins); ``prefix``: a command both clients run behind,
    e.g. a local node's ``command_prefix()`` when the registry is reachable only inside it."""
    registry = registry.strip().removeprefix("oci://").rstrip("/")
    if not registry or "://" in registry or registry.startswith("/"):
        raise ReleaseError(f"REGISTRY {registry!r}: give host[:port]/path, e.g. registry.example.com/tcr-addon")
    helm_args = [*prefix, str(tools.helm_path()), "push", str(pkg.chart), f"oci://{registry}"]
    skopeo_args = []
    if ca_dir is not None:
        helm_args += ["--ca-file", str(ca_dir / "ca.crt")]
        skopeo_args += ["--dest-cert-dir", str(ca_dir)]
    if authfile is not None:
        helm_args += ["--registry-config", str(authfile)]
        skopeo_args += ["--dest-authfile", str(authfile)]
    run(helm_args, timeout=600)
    pushed = [f"oci://{registry}/tcr-addon:{pkg.version}"]
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise ReleaseError("skopeo is not installed: run 'make setup' (Debian: apt-get install skopeo)")
    for repository, archive in pkg.images:
        destination = f"{registry}/{repository}:{pkg.app_version}"
        run([*prefix, skopeo, "copy", "--quiet", *skopeo_args, f"docker-archive:{archive}", f"docker://{destination}"],
            timeout=600)
        pushed.append(destination)
    for ref in pushed:
        log(f"pushed {ref}")
    return pushed


def install_command(registry: str, pkg: Package) -> str:
    """The `helm install` that takes the chart and both images from ``registry``."""
    host, _, path = registry.removeprefix("oci://").rstrip("/").partition("/")
    sets = []
    for repository, key in VALUES_KEYS.items():
        sets += [f"--set {key}.image.registry={host}",
                 f"--set {key}.image.repository={path + '/' if path else ''}{repository}"]
    return (f"helm install tcr-addon oci://{registry}/tcr-addon --version {pkg.version} "
            f"-n tcr-assistant-system --create-namespace {' '.join(sets)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.release", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("package", help="write the chart archive and both images to dist/ (root: builds images)")
    pack.add_argument("--out", type=Path, default=DIST, help="output directory (default: dist/)")
    pub = sub.add_parser("publish", help="package, then push the chart (helm push) and both images (skopeo)")
    pub.add_argument("--registry", required=True, metavar="HOST[:PORT]/PATH", help="OCI registry and path")
    pub.add_argument("--out", type=Path, default=DIST, help="output directory (default: dist/)")
    pub.add_argument("--ca-dir", type=Path, help="directory with the registry's ca.crt (default: system trust)")
    pub.add_argument("--authfile", type=Path, help="auth file with the registry's credentials (default: the "
                     "clients' own logins: helm registry login, skopeo login)")
    args = parser.parse_args(argv)
    try:
        pkg = package(args.out)
        if args.command == "publish":
            publish(args.registry, pkg, ca_dir=args.ca_dir, authfile=args.authfile)
            print(install_command(args.registry, pkg))
    except (ReleaseError, AddonError, images.ImageError, engine.EngineError) as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
