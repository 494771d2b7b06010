"""`make images`: build controller/Dockerfile and hosts-updater/Dockerfile with a real Docker engine, offline.

The Dockerfiles pin their base image by digest (`ARG BASE_IMAGE=python:3.11-slim@sha256:...`) and
every wheel by hash (requirements.txt, build-requirements.txt next to them). No registry is reachable
here, so the harness makes a local stand-in for that image and passes it as the Dockerfiles' one
override, `--build-arg BASE_IMAGE=...` (and `BUILD_IMAGE` for the build stage): a Debian bookworm root
filesystem from `mmdebstrap` (the machine's own Debian mirror) with python3, python3-venv and
python3-pip (the real image has a system pip, setuptools and wheel too, which the Dockerfiles remove),
and, for the build stage only, an offline wheelhouse of exactly the hashed requirements
(`/opt/wheelhouse`, used through `/etc/pip.conf`). Both are cached in the tool cache, keyed by a hash
of their inputs.

The Docker engine (`harness.engine`) is Debian's dockerd, started for one build in namespaces of
its own and removed afterwards. The Dockerfiles are built otherwise unchanged with the classic builder
and `--network none`; each image is saved (`docker save`) to an archive in the cache, named by a
content hash of its build context and the base image, so an unchanged source tree is not built
again.

`pin` and `lock` refresh the digest and the hashes (they need a registry and PyPI).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import REPO_ROOT, VENV, tools
from harness.engine import LOG_DIR, DockerEngine, EngineError, check_engine_prerequisites, log, sweep_stale
from harness.processes import pid_alive

REGISTRY = "tcr-addon.local"
BASE_REF = "python:3.11-slim"  # the image the Dockerfiles pin by digest
# The harness's offline stand-ins, passed as the Dockerfiles' BASE_IMAGE and BUILD_IMAGE.
STANDIN_REF = f"{REGISTRY}/python-standin:3.11-slim"
BUILD_STANDIN_REF = f"{REGISTRY}/python-standin:3.11-slim-wheelhouse"
BASE_IMAGE_ARG = "BASE_IMAGE"
BUILD_IMAGE_ARG = "BUILD_IMAGE"
PINNED_BASE = re.compile(r"^python:3\.11-slim@sha256:[0-9a-f]{64}$")
SUITE = "bookworm"
# python3-pip (with python3-setuptools, python3-wheel) because python:3.11-slim has them as well:
# the Dockerfiles' removal of them is then exercised here too.
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# Keep the image slim; licences stay.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# Wheels for the image's interpreter: Debian bookworm has CPython 3.11 and glibc 2.36.
WHEEL_PYTHON = "3.11"
WHEEL_ABI = "cp311"
IMAGE_GLIBC_MINOR = 36
# `lock` records the hashes of the wheels of both architectures python:3.11-slim is published for.
LOCK_ARCHITECTURES = ("x86_64", "aarch64")
# apt settings of this machine that mmdebstrap's apt must share (mmdebstrap reads no host apt.conf).
APT_OPTION_KEYS = (
    "Acquire::Check-Valid-Until", "Acquire::Check-Date", "Acquire::http::Proxy", "Acquire::https::Proxy",
)
# Bump when the way images are made changes, so cached archives are not reused.
RECIPE_VERSION = "2"
BASE_DOCKERFILE = """\
# Local stand-in for python:3.11-slim (no registry here): Debian {suite} python3, pip, setuptools, wheel.
FROM {rootfs_ref}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
"""
# The build stage's stand-in: the same plus the wheelhouse, which never reaches a runtime image.
BUILD_BASE_DOCKERFILE = """\
FROM {standin_ref}
COPY wheelhouse /opt/wheelhouse
COPY pip.conf /etc/pip.conf
"""
PIP_CONF = "[global]\nno-index = true\nfind-links = /opt/wheelhouse\n"
# Files of a build context that never reach an image (the Dockerfiles COPY only sources):
# editable-install metadata and caches that tests create. Left out of the copy and the hash.
CONTEXT_IGNORE = re.compile(r"^(__pycache__|.*\.pyc|.*\.egg-info|\.pytest_cache|\.mypy_cache|\.ruff_cache)$")
DEFAULT_CLUSTER_DIR = REPO_ROOT / ".local" / "cluster"


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # e.g. "tcr-addon.local/tcr-assistant:dev-0123456789ab"
    registry: str  # "tcr-addon.local"
    repository: str  # "tcr-assistant"
    tag: str
    archive: Path  # docker-save archive (importable with `ctr -n k8s.io images import`)
    cached: bool = field(default=False, compare=False)  # True: taken from the cache, no engine started


RUNTIME_REQUIREMENTS = "requirements.txt"  # pyproject's dependencies, installed into the runtime venv
BUILD_REQUIREMENTS = "build-requirements.txt"  # pyproject's build-system requires, build stage only


@dataclass(frozen=True)
class ImageSpec:
    repository: str
    context: Path
    command: str  # the entrypoint, smoke-tested with --help
    requirement_files: tuple[str, ...]  # hashed requirements next to the Dockerfile

    def ref(self, tag: str) -> str:
        return f"{REGISTRY}/{self.repository}:{tag}"


IMAGES = (
    ImageSpec("tcr-assistant", REPO_ROOT / "controller", "tcr-assistant", (RUNTIME_REQUIREMENTS, BUILD_REQUIREMENTS)),
    # Standard library only: no runtime requirements, just its build backend.
    ImageSpec("hosts-updater", REPO_ROOT / "hosts-updater", "hosts-updater", (BUILD_REQUIREMENTS,)),
)


def images_dir() -> Path:
    return tools.cache_root() / "images"


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# -- base image inputs: Debian root filesystem + wheelhouse -----------------------------------


def apt_sources(suite: str = SUITE, apt: Path = Path("/etc/apt")) -> list[str]:
    """One-line `deb URI SUITE COMPONENTS` entries for `suite` (and its -updates, -security) from apt's sources."""
    lines: list[str] = []
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in files:
        if not path.is_file():
            continue
        for raw in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", raw.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb":
                lines.append(" ".join(words))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for raw in stanza.splitlines():
                if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                    continue
                key, value = raw.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for entry in fields.get("suites", "").split():
                    lines.append(f"deb {uri} {entry} {fields.get('components', 'main')}")
    wanted = [line for line in lines if line.split()[2].split("-")[0].split("/")[0] == suite]
    return list(dict.fromkeys(wanted))


def apt_options() -> list[str]:
    """This machine's apt settings that matter to downloading (validity checks of a snapshot, proxies)."""
    try:
        dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    options = []
    for line in dump.splitlines():
        match = re.match(r'^(\S+) "(.*)";$', line)
        if match and match.group(1) in APT_OPTION_KEYS and match.group(2):
            options.append(f'{match.group(1)} "{match.group(2)}"')
    return options


# -- hashed requirements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """One requirement line: `name==version` and the sha256 of every wheel file it may be."""

    name: str  # normalised (PEP 503)
    version: str
    hashes: tuple[str, ...]  # sha256 hex digests, sorted

    def line(self) -> str:
        return " \\\n    ".join([f"{self.name}=={self.version}", *(f"--hash=sha256:{h}" for h in self.hashes)])


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str, source: str) -> list[Pin]:
    """The pins of a hashed requirements file; anything pip --require-hashes would refuse is an error here."""
    pins: list[Pin] = []
    for raw in text.replace("\\\n", " ").splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", words[0])
        if match is None:
            raise ImageError(f"{source}: '{words[0]}' is not NAME==VERSION: every requirement is pinned exactly "
                             f"(regenerate the file: python -m harness.images lock)")
        hashes = []
        for word in words[1:]:
            hashed = re.fullmatch(r"--hash=sha256:([0-9a-f]{64})", word)
            if hashed is None:
                raise ImageError(f"{source}: {words[0]}: '{word}' is not --hash=sha256:<64 hex digits>")
            hashes.append(hashed.group(1))
        if not hashes:
            raise ImageError(f"{source}: {words[0]} has no --hash=sha256:...; pip --require-hashes refuses it "
                             f"(regenerate the file: python -m harness.images lock)")
        pins.append(Pin(normalize_name(match.group(1)), match.group(2), tuple(sorted(set(hashes)))))
    return pins


def render_requirements(pins: Sequence[Pin], header: Sequence[str]) -> str:
    body = [f"# {line}".rstrip() for line in header] + [pin.line() for pin in sorted(pins, key=lambda p: p.name)]
    return "\n".join(body) + "\n"


def wheel_name_version(filename: str) -> tuple[str, str]:
    """`prometheus_client-0.26.0-py3-none-any.whl` -> ("prometheus-client", "0.26.0")."""
    parts = filename.removesuffix(".whl").split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        raise ImageError(f"{filename}: not a wheel file name")
    return normalize_name(parts[0]), parts[1]


def spec_pins(spec: ImageSpec) -> list[Pin]:
    pins: list[Pin] = []
    for name in spec.requirement_files:
        path = spec.context / name
        if not path.is_file():
            raise ImageError(f"{path} is missing: generate it with python -m harness.images lock")
        pins += parse_requirements(path.read_text(), str(path.relative_to(REPO_ROOT)))
    return pins


def wheelhouse_pins() -> list[Pin]:
    """Every pin of both images, once: exactly what the offline wheelhouse holds."""
    merged: dict[str, Pin] = {}
    for spec in IMAGES:
        for pin in spec_pins(spec):
            if merged.get(pin.name, pin) != pin:
                raise ImageError(f"{pin.name} is pinned differently in the two images' requirements: "
                                 f"run python -m harness.images lock")
            merged[pin.name] = pin
    return [merged[name] for name in sorted(merged)]


def wheel_platforms(arch: str = "x86_64") -> list[str]:
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(IMAGE_GLIBC_MINOR, 4, -1)]
    legacy = ("2014", "2010", "1") if arch == "x86_64" else ("2014",)  # the older tags exist for x86_64 only
    return [*platforms, *(f"manylinux{tag}_{arch}" for tag in legacy)]


def pip_download_argv(arch: str, dest: Path, *requirements: str) -> list[str]:
    """`pip download` of wheels for the images' interpreter (CPython 3.11, glibc 2.36) on `arch`."""
    return [str(VENV / "bin" / "python"), "-m", "pip", "download", "--disable-pip-version-check", "--no-cache-dir",
            "--quiet", "--only-binary=:all:", "--python-version", WHEEL_PYTHON, "--implementation", "cp",
            "--abi", WHEEL_ABI, *itertools.chain.from_iterable(("--platform", p) for p in wheel_platforms(arch)),
            "--dest", str(dest), *requirements]


def _pip_download(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"pip download failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_pins(requirements: Sequence[str], work: Path) -> list[Pin]:
    """Resolve `requirements` (with everything they need) for the first architecture; then hash the very same
    versions' wheels for every architecture. Downloads real wheels from the index pip is configured with."""
    if not requirements:
        return []
    first, *others = LOCK_ARCHITECTURES
    _pip_download(pip_download_argv(first, work / first, *requirements))
    versions: dict[str, str] = {}
    hashes: dict[str, set[str]] = {}
    for wheel in sorted((work / first).glob("*.whl")):
        name, version = wheel_name_version(wheel.name)
        versions[name] = version
        hashes.setdefault(name, set()).add(file_sha256(wheel))
    for arch in others:
        _pip_download([*pip_download_argv(arch, work / arch, *(f"{n}=={v}" for n, v in versions.items())),
                       "--no-deps"])
        for wheel in sorted((work / arch).glob("*.whl")):
            name, version = wheel_name_version(wheel.name)
            if versions.get(name) != version:
                raise ImageError(f"{arch}: pip downloaded {wheel.name}, not a pinned version")
            hashes[name].add(file_sha256(wheel))
    return [Pin(name, versions[name], tuple(sorted(hashes[name]))) for name in sorted(versions)]


def lock_header(spec: ImageSpec, filename: str) -> list[str]:
    field_name = "[project] dependencies" if filename == RUNTIME_REQUIREMENTS else "[build-system] requires"
    stage = "into the runtime venv" if filename == RUNTIME_REQUIREMENTS else "in the build stage only"
    return [
        f"{spec.repository} image: {field_name} of pyproject.toml, with everything they need, pinned",
        f"with the sha256 of each wheel for CPython {WHEEL_PYTHON} on linux {' and '.join(LOCK_ARCHITECTURES)}.",
        f"The Dockerfile installs them {stage}: pip install --require-hashes --no-deps -r {filename}",
        "Generated by `PYTHONPATH=scripts .venv/bin/python -m harness.images lock` (needs PyPI); do not edit.",
    ]


def lock(work: Path) -> list[Path]:
    """Write every image's hashed requirements files from its pyproject.toml (the `lock` command)."""
    written = []
    for spec in IMAGES:
        pyproject = tomllib.loads((spec.context / "pyproject.toml").read_text())
        groups = {RUNTIME_REQUIREMENTS: pyproject.get("project", {}).get("dependencies", []),
                  BUILD_REQUIREMENTS: pyproject.get("build-system", {}).get("requires", [])}
        for filename, requirements in groups.items():
            if filename not in spec.requirement_files:
                if requirements:
                    raise ImageError(f"{spec.context.name}/pyproject.toml declares {requirements} but its image "
                                     f"installs no {filename}: add it to the image's requirement_files")
                continue
            pins = resolve_pins(requirements, work / spec.repository / filename)
            path = spec.context / filename
            path.write_text(render_requirements(pins, lock_header(spec, filename)))
            log(f"{path.relative_to(REPO_ROOT)}: {', '.join(f'{p.name}=={p.version}' for p in pins)}")
            written.append(path)
    return written


# -- the pinned base image -------------------------------------------------------------------

BASE_ARG_LINE = re.compile(rf"^ARG {BASE_IMAGE_ARG}=(\S+)$", re.MULTILINE)


def pinned_base(dockerfile_text: str, source: str) -> str:
    """The `ARG BASE_IMAGE=python:3.11-slim@sha256:...` default of a Dockerfile."""
    found = BASE_ARG_LINE.findall(dockerfile_text)
    if len(found) != 1 or not PINNED_BASE.match(found[0]):
        raise ImageError(f"{source}: needs exactly one 'ARG {BASE_IMAGE_ARG}={BASE_REF}@sha256:<64 hex digits>' "
                         f"line, found {found}: run python -m harness.images pin")
    return str(found[0])


def rewrite_pin(dockerfile_text: str, digest_value: str, source: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest_value):
        raise ImageError(f"'{digest_value}' is not a digest: give sha256:<64 hex digits>")
    pinned_base(dockerfile_text, source)
    return BASE_ARG_LINE.sub(f"ARG {BASE_IMAGE_ARG}={BASE_REF}@{digest_value}", dockerfile_text)


def _digest_from(argv: list[str], output: bytes) -> str:
    if argv[0] == "skopeo":  # the raw manifest list: its digest is the sha256 of these very bytes
        return "sha256:" + hashlib.sha256(output).hexdigest()
    text = output.decode().strip()
    if argv[0] == "docker":
        return str(json.loads(text)["digest"])
    return text


def resolve_base_digest() -> str:
    """The current digest of python:3.11-slim (its multi-platform index) from the registry."""
    attempts = []
    for argv in (["crane", "digest", BASE_REF],
                 ["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Manifest}}", BASE_REF],
                 ["skopeo", "inspect", "--raw", f"docker://docker.io/library/{BASE_REF}"]):
        if shutil.which(argv[0]) is None:
            attempts.append(f"{argv[0]}: not installed")
            continue
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=120)
        except subprocess.TimeoutExpired:
            attempts.append(f"{argv[0]}: no answer in 120 s")
            continue
        if proc.returncode == 0:
            return _digest_from(argv, proc.stdout)
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        attempts.append(f"{' '.join(argv[:2])}: {tail[0][:300]}")
    raise ImageError(f"cannot resolve {BASE_REF}'s digest (needs a registry; or give --digest sha256:...): "
                     + "; ".join(attempts))


def pin(digest_value: str | None) -> str:
    """Rewrite both Dockerfiles' BASE_IMAGE default to `digest_value` (resolved now if None)."""
    digest_value = digest_value or resolve_base_digest()
    for spec in IMAGES:
        path = spec.context / "Dockerfile"
        path.write_text(rewrite_pin(path.read_text(), digest_value, str(path.relative_to(REPO_ROOT))))
        log(f"{path.relative_to(REPO_ROOT)}: {BASE_REF}@{digest_value}")
    return digest_value


@dataclass(frozen=True)
class BaseInputs:
    sources: tuple[str, ...]
    pins: tuple[Pin, ...]

    @property
    def rootfs_key(self) -> str:
        return digest("rootfs", SUITE, *BASE_PACKAGES, *DPKG_OPTIONS, *self.sources)[:12]

    @property
    def wheels_key(self) -> str:
        return digest("wheels", WHEEL_PYTHON, WHEEL_ABI, *wheel_platforms(), *(p.line() for p in self.pins))[:12]

    @property
    def key(self) -> str:
        return digest(RECIPE_VERSION, self.rootfs_key, self.wheels_key, BASE_DOCKERFILE, BUILD_BASE_DOCKERFILE,
                      PIP_CONF)[:12]

    @property
    def rootfs_dir(self) -> Path:
        return tools.cache_root() / f"base-rootfs-{self.rootfs_key}"

    @property
    def wheels_dir(self) -> Path:
        return tools.cache_root() / f"base-wheels-{self.wheels_key}"

    @property
    def rootfs(self) -> Path:
        return self.rootfs_dir / "rootfs.tar"

    @property
    def wheelhouse(self) -> Path:
        return self.wheels_dir / "wheelhouse"


def base_inputs() -> BaseInputs:
    return BaseInputs(tuple(apt_sources()), tuple(wheelhouse_pins()))


def remove_dead_partials(pattern: str) -> None:
    """Half-made cache directories (`<name>.partial-<pid>`) of builds that were killed (their process is gone)."""
    for partial in tools.cache_root().glob(pattern):
        pid = partial.name.rsplit("-", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _remove_stale_partials() -> None:
    remove_dead_partials("base-*.partial-*")
    for partial in images_dir().glob("*.tar.partial"):
        partial.unlink(missing_ok=True)  # only written under the build lock


def fill_cache_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Run `fill(partial_dir)`, then move the result into place (a half-made cache is never used)."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        fill(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def mmdebstrap(tarball: Path, packages: Sequence[str], sources: Sequence[str], log_name: str,
               variant: str = "minbase") -> None:
    """A Debian root filesystem tar of `packages` from this machine's mirror (`sources`)."""
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap not found: apt-get install mmdebstrap")
    if os.geteuid() != 0:
        raise ImageError("mmdebstrap needs root here (it runs in root mode): run it as root")
    if not sources:
        raise ImageError(f"no '{SUITE}' entry in /etc/apt/sources.list(.d): mmdebstrap needs this machine's mirror")
    argv = ["unshare", "--mount", "--propagation", "private",  # its /proc, /dev mounts stay private
            "mmdebstrap", f"--variant={variant}", "--mode=root", f"--include={','.join(packages)}",
            *(f"--aptopt={option}" for option in apt_options()),
            *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
            SUITE, str(tarball), *sources]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / log_name
    with log_path.open("w") as log_file:
        proc = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ImageError(f"mmdebstrap failed ({proc.returncode}); log tail:\n{log_path.read_text()[-3000:]}")


def build_rootfs(inputs: BaseInputs, out: Path) -> None:
    mmdebstrap(out / "rootfs.tar", BASE_PACKAGES, inputs.sources, "mmdebstrap.log")
    (out / "manifest.json").write_text(json.dumps(
        {"suite": SUITE, "packages": BASE_PACKAGES, "sources": inputs.sources, "dpkg": DPKG_OPTIONS}, indent=2))


def build_wheelhouse(inputs: BaseInputs, out: Path) -> None:
    """Exactly the pinned wheels for x86_64, each checked against its hash (by pip, and here again)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        raise ImageError(f"{python} not found: run 'make setup' (the wheelhouse is downloaded with its pip)")
    wheelhouse = out / "wheelhouse"
    requirements = out / "requirements.txt"
    requirements.write_text(render_requirements(inputs.pins, ["every pin of both images (wheelhouse_pins)"]))
    _pip_download([*pip_download_argv("x86_64", wheelhouse), "--require-hashes", "--no-deps", "-r", str(requirements)])
    wheels = sorted(wheelhouse.glob("*.whl"))
    by_name = {pin.name: pin for pin in inputs.pins}
    for wheel in wheels:
        name, version = wheel_name_version(wheel.name)
        pinned = by_name.get(name)
        if pinned is None or pinned.version != version or file_sha256(wheel) not in pinned.hashes:
            raise ImageError(f"{wheel.name}: not one of the pinned, hashed wheels")
    if sorted(wheel_name_version(wheel.name)[0] for wheel in wheels) != sorted(by_name):
        raise ImageError(f"the wheelhouse holds {[w.name for w in wheels]}, not one wheel per pin {sorted(by_name)}")
    (out / "manifest.json").write_text(json.dumps(
        {"requirements": [pin.line() for pin in inputs.pins], "wheels": [wheel.name for wheel in wheels]}, indent=2))


def ensure_base(force: bool = False) -> BaseInputs:
    """The base root filesystem and wheelhouse, from the cache or made now."""
    inputs = base_inputs()
    for name, target, build in (("root filesystem", inputs.rootfs_dir, build_rootfs),
                                ("wheelhouse", inputs.wheels_dir, build_wheelhouse)):
        if not force and (target / "manifest.json").exists():
            log(f"base {name}: cached ({target})")
            continue
        started = time.monotonic()
        if build is build_rootfs:
            log(f"base {name}: mmdebstrap {SUITE} with {', '.join(BASE_PACKAGES)} (about a minute) …")
        else:
            log(f"base {name}: pip download for CPython {WHEEL_PYTHON} manylinux x86_64, hashes checked: "
                f"{' '.join(f'{p.name}=={p.version}' for p in inputs.pins)} …")
        fill_cache_dir(target, functools.partial(build, inputs))
        log(f"base {name}: made in {time.monotonic() - started:.1f} s ({target})")
    wheels = json.loads((inputs.wheels_dir / "manifest.json").read_text())["wheels"]
    log(f"base: stand-in for {BASE_REF} key {inputs.key}: {inputs.rootfs}, {len(wheels)} wheels")
    return inputs


# -- build contexts --------------------------------------------------------------------------


def _context_ignore(directory: str, names: list[str]) -> set[str]:
    return {name for name in names if CONTEXT_IGNORE.match(name)}


def context_files(context: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(context):
        dirs[:] = sorted(d for d in dirs if not CONTEXT_IGNORE.match(d))
        files += [Path(root) / name for name in sorted(names) if not CONTEXT_IGNORE.match(name)]
    return files


def context_hash(context: Path) -> str:
    hasher = hashlib.sha256()
    for path in context_files(context):
        relative = path.relative_to(context).as_posix()
        if path.is_symlink():
            hasher.update(f"L {relative} {os.readlink(path)}\0".encode())
            continue
        hasher.update(f"F {relative} {os.stat(path).st_mode & 0o111:o}\0".encode())
        hasher.update(hashlib.sha256(path.read_bytes()).digest())
    return hasher.hexdigest()


def image_tag(base_key: str, context_digest: str) -> str:
    return "dev-" + digest(RECIPE_VERSION, base_key, context_digest)[:12]


def archive_path(spec: ImageSpec, tag: str) -> Path:
    return images_dir() / f"{spec.repository}-{tag}.tar"


# -- building --------------------------------------------------------------------------------


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_build_standin(engine: DockerEngine, wheelhouse: Path, ref: str = BUILD_STANDIN_REF) -> None:
    """The build stage's stand-in: the base stand-in plus `wheelhouse` and a pip.conf that uses only it."""
    context = engine.state / f"build-standin-{ref.rsplit(':', 1)[1]}"
    shutil.copytree(wheelhouse, context / "wheelhouse")
    (context / "pip.conf").write_text(PIP_CONF)
    (context / "Dockerfile").write_text(BUILD_BASE_DOCKERFILE.format(standin_ref=STANDIN_REF))
    engine.docker("build", "--network", "none", "--tag", ref, str(context), log_file=LOG_DIR / "build-base.log")


def load_base(engine: DockerEngine, base: BaseInputs) -> None:
    """`docker import` the root filesystem as the stand-in for python:3.11-slim; add the wheelhouse for the
    build stage's."""
    started = time.monotonic()
    rootfs_ref = f"{REGISTRY}/base-rootfs:{base.rootfs_key}"
    engine.docker("import", str(base.rootfs), rootfs_ref)
    context = engine.state / "base-context"
    context.mkdir()
    (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(suite=SUITE, rootfs_ref=rootfs_ref))
    engine.docker("build", "--network", "none", "--tag", STANDIN_REF, str(context),
                  log_file=LOG_DIR / "build-base.log")
    load_build_standin(engine, base.wheelhouse)
    log(f"stand-ins {STANDIN_REF}, {BUILD_STANDIN_REF} (key {base.key}) loaded in {time.monotonic() - started:.1f} s")


def image_build_argv(ref: str, context: Path, build_standin: str = BUILD_STANDIN_REF) -> list[str]:
    """`docker build` of a Dockerfile as it is, its pinned base swapped for the local stand-ins: the only
    override there is (the Dockerfiles' BASE_IMAGE and BUILD_IMAGE arguments)."""
    return ["build", "--network", "none", "--build-arg", f"{BASE_IMAGE_ARG}={STANDIN_REF}",
            "--build-arg", f"{BUILD_IMAGE_ARG}={build_standin}", "--tag", ref, str(context)]


def build_one(engine: DockerEngine, spec: ImageSpec, tag: str, context_digest: str) -> Path:
    """Build from a copy of the context (without caches), smoke-test `--help`, save the archive."""
    context = engine.state / f"context-{spec.repository}"
    shutil.copytree(spec.context, context, ignore=_context_ignore, symlinks=True)
    if context_hash(context) != context_digest:
        raise ImageError(f"{spec.context} changed while it was being built: run it again")
    dockerfile = f"{spec.context.relative_to(REPO_ROOT)}/Dockerfile"
    pinned = pinned_base((context / "Dockerfile").read_text(), dockerfile)
    return build_and_save(engine, spec, context, tag, f"from {dockerfile} ({pinned}, here its stand-in)",
                          log_name=f"build-{spec.repository}.log", series="dev")


def build_and_save(engine: DockerEngine, spec: ImageSpec, context: Path, tag: str, what: str, *, log_name: str,
                   series: str) -> Path:
    """`docker build` of `context`, a `--help` smoke test, the archive saved (and the older archives of
    the same `series`, `<repository>-<series>-*.tar`, removed)."""
    ref = spec.ref(tag)
    started = time.monotonic()
    log(f"docker build {ref} {what} …")
    engine.docker(*image_build_argv(ref, context), log_file=LOG_DIR / log_name)
    smoke = engine.docker("run", "--rm", "--network", "none", ref, "--help", timeout=120)
    if "usage:" not in smoke.stdout:
        raise ImageError(f"{ref}: '{spec.command} --help' printed no usage:\n{smoke.stdout[-2000:]}")
    user = engine.docker("image", "inspect", "--format", "{{.Config.User}}", ref).stdout.strip()
    archive = archive_path(spec, tag)
    partial = archive.with_name(archive.name + ".partial")
    engine.docker("save", "--output", str(partial), ref)
    partial.chmod(0o644)
    partial.rename(archive)
    for old in images_dir().glob(f"{spec.repository}-{series}-*.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    log(f"built {ref} (user {user or 'root'}, {archive.stat().st_size / 2**20:.0f} MiB archive) "
        f"in {time.monotonic() - started:.1f} s")
    return archive


def build_images(force: bool = False) -> list[BuiltImage]:
    """Both images (controller first, then hosts-updater), from the cache or built now."""
    started = time.monotonic()
    with build_lock():
        _remove_stale_partials()
        inputs = base_inputs()
        digests = [context_hash(spec.context) for spec in IMAGES]
        tags = [image_tag(inputs.key, context_digest) for context_digest in digests]
        cached = [archive_path(spec, tag).exists() for spec, tag in zip(IMAGES, tags, strict=True)]
        if all(cached) and not force:
            log(f"cache hit: both images unchanged ({time.monotonic() - started:.2f} s, no engine started)")
            return [_built(spec, tag, cached=True) for spec, tag in zip(IMAGES, tags, strict=True)]
        base = ensure_base()
        assert base.key == inputs.key
        with DockerEngine() as engine:
            load_base(engine, base)
            for spec, tag, context_digest, hit in zip(IMAGES, tags, digests, cached, strict=True):
                if hit and not force:
                    log(f"{spec.ref(tag)}: cached")
                    continue
                build_one(engine, spec, tag, context_digest)
        log(f"engine {engine.name} stopped; nothing left (process, mount, netns, cgroup)")
    log(f"done in {time.monotonic() - started:.1f} s")
    return [_built(spec, tag, cached=hit and not force) for spec, tag, hit in zip(IMAGES, tags, cached, strict=True)]


def _built(spec: ImageSpec, tag: str, *, cached: bool) -> BuiltImage:
    return BuiltImage(spec.ref(tag), REGISTRY, spec.repository, tag, archive_path(spec, tag), cached=cached)


def load_into_node(cluster_dir: Path, built: Sequence[BuiltImage]) -> None:
    """Import the archives into the node running from `cluster_dir` (none running: say so, do nothing)."""
    from harness.node import NodeCluster, plane_class  # the node needs the .venv; the build does not

    if not (cluster_dir / "state.json").exists() or plane_class(cluster_dir) is not NodeCluster:
        log(f"no node runs from {cluster_dir} ('scripts/cluster --node up'): images built, not loaded")
        return
    node = NodeCluster.attach(cluster_dir)
    node.import_images(built)
    log(f"loaded {len(built)} images into node {node.node_name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.images",
        description="Build controller/Dockerfile and hosts-updater/Dockerfile offline with a throw-away Docker "
        f"engine (Debian's dockerd, in namespaces this command creates and removes; needs root). The Dockerfiles "
        f"pin {BASE_REF} by digest; here a local stand-in made with mmdebstrap ({SUITE}), plus a wheelhouse of the "
        f"hashed requirements for the build stage, is passed as their {BASE_IMAGE_ARG} and {BUILD_IMAGE_ARG}. "
        f"Images are {REGISTRY}/tcr-assistant:TAG and {REGISTRY}/hosts-updater:TAG, TAG a content hash; their "
        f"docker-save archives and the base are cached under $TCR_ADDON_CACHE (default ~/.cache/tcr-addon).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build both images (cached: an unchanged source tree is not built again); "
                           "prints each image reference and its archive")
    build.add_argument("--force", action="store_true", help="build the images even if their archives are cached "
                       "(the base still comes from the cache)")
    build.add_argument("--load", metavar="CLUSTER_DIR", type=Path, nargs="?", const=DEFAULT_CLUSTER_DIR,
                       help="also load both images into the node of the cluster that 'scripts/cluster --node up' "
                       f"runs from CLUSTER_DIR (default {DEFAULT_CLUSTER_DIR}), if one runs there")
    base = sub.add_parser("base", help=f"make only the base: the {SUITE} root filesystem and the wheelhouse")
    base.add_argument("--force", action="store_true", help="make them again even if cached")
    sub.add_parser("sweep", help="remove what an interrupted build left behind (namespaces, cgroups, state)")
    pin_parser = sub.add_parser("pin", help=f"refresh the {BASE_REF} digest both Dockerfiles pin: resolved with crane, "
                                "docker buildx imagetools or skopeo (needs the registry), or given")
    pin_parser.add_argument("--digest", metavar="sha256:HEX", help="pin this digest instead of resolving one")
    sub.add_parser("lock", help="regenerate the hashed requirements files next to both Dockerfiles from their "
                   "pyproject.toml (pip download from PyPI; every wheel's sha256 for linux "
                   f"{' and '.join(LOCK_ARCHITECTURES)})")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a running engine is stopped and removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.command == "build":
            built = build_images(force=args.force)
            for image in built:
                print(f"{image.ref} {image.archive}")
            if args.load:
                load_into_node(args.load, built)
        elif args.command == "base":
            inputs = ensure_base(force=args.force)
            print(f"stand-in for {BASE_REF} key {inputs.key}: {inputs.rootfs} {inputs.wheelhouse}")
        elif args.command == "pin":
            print(f"{BASE_REF}@{pin(args.digest)}")
        elif args.command == "lock":
            with tempfile.TemporaryDirectory(prefix="tcr-addon-lock-") as work:
                for path in lock(Path(work)):
                    print(path)
        elif args.command == "sweep":
            check_engine_prerequisites()
            swept = sweep_stale()
            log(f"removed {len(swept)} stale engine(s)" if swept else "nothing to remove")
    except (ImageError, EngineError, tools.ToolError) as error:
        print(f"harness.images: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
