"""The previous release, 0.1.0, kept reachable: its chart archive and its two images, built offline.

``releases/0.1.0/`` holds the chart as ``helm package`` made it from commit c315525 and the
source of its images (``controller/`` and ``hosts-updater/`` at that commit). The upgrade test
installs that chart, with these images, and upgrades and rolls back from there.

0.1.0's own Dockerfiles cannot be built by ``harness.images``' offline recipe: they say
``FROM python:3.11-slim`` with no ``BASE_IMAGE`` argument (the recipe's one override, which
points at the local stand-in), so the engine would pull that image, and they run ``pip install
.`` against an index, with no hashed requirements for the offline wheelhouse. ``check`` runs
that build as the recipe would and prints where it stops. So the 0.1.0 *sources* are built with
*today's* Dockerfiles and hashed requirements (the 0.1.0 controller's dependencies,
prometheus-client, PyYAML and urllib3, are pinned at the same versions there; checked before
every build): the same Python code, in today's image layout, with the packages today's
controller adds (cryptography) present but never imported by 0.1.0.

Images are ``tcr-addon.local/tcr-assistant:0.1.0-HASH`` and ``tcr-addon.local/hosts-updater:0.1.0-HASH``,
HASH a content hash of the assembled build context and the base, cached as docker-save archives
next to ``harness.images``' own (an unchanged archive is not built again).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from harness import REPO_ROOT, images, tools
from harness.engine import LOG_DIR, DockerEngine, EngineError, log
from harness.images import (
    IMAGES,
    RECIPE_VERSION,
    REGISTRY,
    BuiltImage,
    ImageError,
    ImageSpec,
    _context_ignore,
    archive_path,
    base_inputs,
    build_and_save,
    build_lock,
    context_hash,
    digest,
    ensure_base,
    image_build_argv,
    load_base,
    normalize_name,
    spec_pins,
)

VERSION = "0.1.0"
COMMIT = "c315525"
RELEASE_DIR = REPO_ROOT / "releases" / VERSION
CHART_ARCHIVE = RELEASE_DIR / f"tcr-addon-{VERSION}.tgz"
SOURCES_ARCHIVE = RELEASE_DIR / f"tcr-addon-{VERSION}-images-src.tar.gz"
SOURCES_PREFIX = f"tcr-addon-{VERSION}"
DEFAULT_CLUSTER_DIR = REPO_ROOT / ".local" / "cluster"
# The minimum Kubernetes of the 0.1.0 chart (its Chart.yaml: kubeVersion ">=1.34.0-0").
MIN_KUBERNETES_MINOR = 34


def extract_sources(dest: Path) -> Path:
    """Unpack the 0.1.0 image sources; returns the directory holding controller/ and hosts-updater/."""
    with tarfile.open(SOURCES_ARCHIVE) as archive:
        archive.extractall(dest, filter="data")
    root = dest / SOURCES_PREFIX
    for spec in IMAGES:
        if not (root / spec.context.name / "pyproject.toml").is_file():
            raise ImageError(f"{SOURCES_ARCHIVE.relative_to(REPO_ROOT)} holds no {spec.context.name}/pyproject.toml")
    return root


def pinned_dependencies(pyproject: Path) -> dict[str, str]:
    """``name -> version`` of a pyproject's ``name==version`` dependencies (0.1.0 pins them exactly)."""
    found: dict[str, str] = {}
    for requirement in tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", []):
        name, separator, version = str(requirement).partition("==")
        if not separator:
            raise ImageError(f"{pyproject}: '{requirement}' is not pinned with ==")
        found[normalize_name(name.strip())] = version.strip()
    return found


def assemble(spec: ImageSpec, sources: Path, dest: Path) -> Path:
    """0.1.0's package source with today's Dockerfile and hashed requirements files of the same image."""
    context = dest / spec.context.name
    shutil.copytree(sources / spec.context.name, context, ignore=_context_ignore, symlinks=True)
    for name in ("Dockerfile", *spec.requirement_files):
        shutil.copy2(spec.context / name, context / name)
    pins = {pin.name: pin.version for pin in spec_pins(spec)}
    for name, version in pinned_dependencies(context / "pyproject.toml").items():
        if pins.get(name) != version:
            raise ImageError(f"{VERSION} {spec.context.name} needs {name}=={version}; today's hashed requirements "
                             f"pin {name}=={pins.get(name, 'nothing')}: today's recipe cannot build it as it is")
    return context


def image_tag(base_key: str, context_digest: str) -> str:
    return f"{VERSION}-" + digest(RECIPE_VERSION, "previous", base_key, context_digest)[:12]


def _built(spec: ImageSpec, tag: str, *, cached: bool) -> BuiltImage:
    return BuiltImage(spec.ref(tag), REGISTRY, spec.repository, tag, archive_path(spec, tag), cached=cached)


def build_previous(force: bool = False) -> list[BuiltImage]:
    """Both 0.1.0 images (controller first, then hosts-updater), from the cache or built now."""
    started = time.monotonic()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with build_lock(), tempfile.TemporaryDirectory(prefix="tcr-addon-previous-") as work:
        sources = extract_sources(Path(work) / "src")
        contexts = [assemble(spec, sources, Path(work) / "contexts") for spec in IMAGES]
        inputs = base_inputs()
        tags = [image_tag(inputs.key, context_hash(context)) for context in contexts]
        cached = [archive_path(spec, tag).exists() for spec, tag in zip(IMAGES, tags, strict=True)]
        if all(cached) and not force:
            log(f"cache hit: both {VERSION} images ({time.monotonic() - started:.2f} s, no engine started)")
            return [_built(spec, tag, cached=True) for spec, tag in zip(IMAGES, tags, strict=True)]
        base = ensure_base()
        with DockerEngine() as engine:
            load_base(engine, base)
            for spec, context, tag, hit in zip(IMAGES, contexts, tags, cached, strict=True):
                if hit and not force:
                    continue
                build_and_save(engine, spec, context, tag, f"the {VERSION} source of {spec.context.name}/ with "
                               "today's Dockerfile", log_name=f"build-previous-{spec.repository}.log",
                               series=VERSION)
    log(f"{VERSION} images done in {time.monotonic() - started:.1f} s")
    return [_built(spec, tag, cached=hit and not force) for spec, tag, hit in zip(IMAGES, tags, cached, strict=True)]


def image_values(built: Sequence[BuiltImage]) -> list[str]:
    """`--set` values that point the 0.1.0 chart at these images (never pulled)."""
    values = []
    for image, key in zip(built, ("controller", "hostsUpdater"), strict=True):
        values += [f"{key}.image.registry={image.registry}", f"{key}.image.repository={image.repository}",
                   f"{key}.image.tag={image.tag}", f"{key}.image.pullPolicy=Never"]
    return values


def check_old_dockerfiles() -> str:
    """Build 0.1.0's own Dockerfiles as ``harness.images`` would (stand-ins passed, ``--network none``);
    returns one line per image: where the build stopped, or that it built."""
    lines = []
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with build_lock(), tempfile.TemporaryDirectory(prefix="tcr-addon-previous-check-") as work:
        sources = extract_sources(Path(work) / "src")
        base = ensure_base()
        with DockerEngine() as engine:
            load_base(engine, base)
            for spec in IMAGES:
                context = sources / spec.context.name
                ref = spec.ref(f"{VERSION}-own-dockerfile")
                logfile = LOG_DIR / f"check-previous-{spec.repository}.log"
                proc = engine.docker(*image_build_argv(ref, context), log_file=logfile, check=False)
                if proc.returncode != 0:
                    tail = [line for line in proc.stdout.splitlines() if line.strip()][-3:]
                    lines.append(f"{spec.context.name}/Dockerfile of {VERSION}: does not build offline: "
                                 + " | ".join(tail))
                else:
                    lines.append(f"{spec.context.name}/Dockerfile of {VERSION}: builds offline")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.previous",
        description=f"The previous release, {VERSION} (commit {COMMIT}), from releases/{VERSION}/: build its two "
        "images offline (its sources with today's Dockerfiles and hashed requirements; cached by content) and load "
        f"them into a node. Install it with: helm install tcr-addon {CHART_ARCHIVE.relative_to(REPO_ROOT)} "
        "--set <the values 'build' prints>.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help=f"build both {VERSION} images (cached); prints each reference, its archive, "
                           "and the --set values for the chart")
    build.add_argument("--force", action="store_true", help="build them even if their archives are cached")
    build.add_argument("--load", metavar="CLUSTER_DIR", type=Path, nargs="?", const=DEFAULT_CLUSTER_DIR,
                       help=f"also load them into the node running from CLUSTER_DIR (default {DEFAULT_CLUSTER_DIR})")
    sub.add_parser("check", help=f"try {VERSION}'s own Dockerfiles with harness.images' offline recipe and say where "
                   "they stop (starts a Docker engine; root)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.command == "build":
            built = build_previous(force=args.force)
            for image in built:
                print(f"{image.ref} {image.archive}")
            print(" ".join(f"--set {value}" for value in image_values(built)))
            if args.load:
                images.load_into_node(args.load, built)
        else:
            print(check_old_dockerfiles())
    except (ImageError, EngineError, tools.ToolError) as error:
        print(f"harness.previous: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
