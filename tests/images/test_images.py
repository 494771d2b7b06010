"""`make images`: both Dockerfiles built offline by a throw-away Docker engine (harness.images, harness.engine).

The first run builds for real (cold: about 100 s here, mmdebstrap included); later runs take the
archives from the cache. The images are then loaded into a fresh engine and run. After every
engine, nothing may be left: no process, mount, network namespace, cgroup or state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import REPO_ROOT, images, tools
from harness import engine as docker_engine

CGROUP = Path("/sys/fs/cgroup")


def own_leftovers(pid: int | None = None) -> list[str]:
    """Anything of this process's engines, read straight from /proc, mountinfo, `ip netns`, cgroupfs."""
    prefix = f"{docker_engine.ENGINE_PREFIX}{pid or os.getpid()}-"
    cgroups = [path for hierarchy in [CGROUP, *(p for p in CGROUP.iterdir() if p.is_dir())]
               for path in hierarchy.glob(prefix + "*")]
    in_cgroups: set[str] = set()
    for top in cgroups:
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                in_cgroups.update(procs.read_text().split())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if prefix in cmdline or entry.name in in_cgroups:
                found.append(f"process {entry.name}: {cmdline[:120]}")
    found += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if prefix in line]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if line.startswith(prefix)]
    found += [f"cgroup {path}" for path in cgroups]
    found += [f"directory {path}" for path in Path(tempfile.gettempdir()).glob(prefix + "*")]
    return found


@pytest.fixture(scope="module")
def built() -> list[images.BuiltImage]:
    assert os.geteuid() == 0, "building images needs root (namespaces, dockerd)"
    result = images.build_images()
    assert own_leftovers() == []
    return result


@pytest.fixture
def engine() -> Iterator[docker_engine.DockerEngine]:
    with docker_engine.DockerEngine() as running:
        assert running.reaper is not None
        reaper = running.reaper.pid
        yield running
    assert docker_engine.leftovers(running.name, running.state) == []
    assert own_leftovers() == []
    assert not Path(f"/proc/{reaper}").exists(), "the engine's watcher process is still running"


def archive_repo_tags(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    return [tag for entry in manifest for tag in entry["RepoTags"]]


def test_both_images_are_named_and_saved(built: list[images.BuiltImage]) -> None:
    assert [image.repository for image in built] == ["tcr-assistant", "hosts-updater"]
    for image in built:
        assert image.registry == "tcr-addon.local"
        assert re.fullmatch(r"dev-[0-9a-f]{12}", image.tag)
        assert image.ref == f"tcr-addon.local/{image.repository}:{image.tag}"
        assert image.archive == tools.cache_root() / "images" / f"{image.repository}-{image.tag}.tar"
        assert archive_repo_tags(image.archive) == [image.ref]


def test_second_call_is_a_cache_hit(built: list[images.BuiltImage]) -> None:
    starts = docker_engine.DockerEngine.starts
    again = images.build_images()
    assert again == built
    assert all(image.cached for image in again)
    assert docker_engine.DockerEngine.starts == starts, "a cached build started a Docker engine"


def test_images_run_and_import_with_ctr(built: list[images.BuiltImage], engine: docker_engine.DockerEngine) -> None:
    # The leftover scan sees a running engine (so its empty result afterwards means something).
    seen = own_leftovers()
    assert any(item.startswith("process") for item in seen) and any(item.startswith("netns") for item in seen)

    for image in built:
        engine.docker("load", "--input", str(image.archive))
    controller, hosts_updater = built

    def run(ref: str, *args: str, entrypoint: str | None = None) -> str:
        argv = ["run", "--rm", "--network", "none", *(["--entrypoint", entrypoint] if entrypoint else []), ref, *args]
        return engine.docker(*argv, timeout=120).stdout

    assert run(controller.ref, "--help").startswith("usage: tcr-assistant")
    assert run(hosts_updater.ref, "--help").startswith("usage: hosts-updater")
    assert run(controller.ref, "-u", entrypoint="id").strip() == "65532"
    assert run(hosts_updater.ref, "-u", entrypoint="id").strip() == "0"
    assert run(controller.ref, "-c", "import urllib3, yaml, prometheus_client; print(urllib3.__version__)",
               entrypoint="python").strip() == "2.8.0"
    assert run(controller.ref, "-c", "import importlib.util as u; print(u.find_spec('kubernetes'))",
               entrypoint="python").strip() == "None"  # the controller does not ship the kubernetes package

    # `ctr -n k8s.io images import`, against the engine's own containerd.
    ctr = ["/usr/bin/ctr", "--address", str(engine.state / "exec" / "containerd" / "containerd.sock"), "-n", "k8s.io"]
    for image in built:
        subprocess.run([*ctr, "images", "import", str(image.archive)], check=True, capture_output=True, timeout=300)
    listed = subprocess.run([*ctr, "images", "ls", "-q"], check=True, capture_output=True, text=True).stdout.split()
    assert {image.ref for image in built} <= set(listed)


def test_a_killed_harness_leaves_nothing(built: list[images.BuiltImage]) -> None:
    # A harness process with a running engine and container is SIGKILLed: dockerd dies with it, the
    # container and its shim do not; the engine's watcher removes them and everything else.
    rootfs = images.base_inputs().rootfs
    script = (
        "import sys, time\n"
        "from harness.engine import DockerEngine\n"
        "engine = DockerEngine()\n"
        "engine.start()\n"
        f"engine.docker('import', '{rootfs}', 'base:1')\n"
        "engine.docker('run', '--detach', '--network', 'none', 'base:1', 'sleep', '600')\n"
        "print('ENGINE-UP', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "scripts"))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ENGINE-UP"):
                break
        else:
            pytest.fail("the harness process did not start its engine")
        running = own_leftovers(proc.pid)
        assert any("sleep 600" in item for item in running), running  # the container, seen by the scan
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while own_leftovers(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert own_leftovers(proc.pid) == []


def test_cli_build_prints_refs_and_archives(built: list[images.BuiltImage]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "scripts"))
    proc = subprocess.run([sys.executable, "-m", "harness.images", "build"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[images] cache hit" in proc.stdout
    printed = [line for line in proc.stdout.splitlines() if not line.startswith("[images]")]
    assert printed == [f"{image.ref} {image.archive}" for image in built]


def test_cli_help_names_the_commands() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "scripts"))
    proc = subprocess.run([sys.executable, "-m", "harness.images", "--help"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=True)
    for word in ("build", "base", "sweep", "pin", "lock", "mmdebstrap", "needs root", "digest"):
        assert word in proc.stdout


def test_tag_follows_the_sources_not_the_caches(tmp_path: Path) -> None:
    context = tmp_path / "controller"
    (context / "pkg" / "__pycache__").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (context / "pkg" / "mod.py").write_text("x = 1\n")
    before = images.context_hash(context)
    (context / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (context / "pkg.egg-info").mkdir()
    (context / "pkg.egg-info" / "PKG-INFO").write_text("Name: pkg\n")
    assert images.context_hash(context) == before
    (context / "pkg" / "mod.py").write_text("x = 2\n")
    changed = images.context_hash(context)
    assert changed != before
    assert images.image_tag("base1", before) != images.image_tag("base1", changed)
    assert images.image_tag("base1", before) != images.image_tag("base2", before)


def test_mirror_comes_from_the_machine_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# none\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n"
        "Components: main contrib\n\nTypes: deb-src\nURIs: http://src.example\nSuites: bookworm\n"
        "Components: main\n")
    (tmp_path / "sources.list.d" / "other.list").write_text("deb https://nodes.example/node nodistro main\n")
    assert images.apt_sources("bookworm", tmp_path) == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://deb.example/debian bookworm main",
        "deb http://deb.example/debian bookworm-updates main",
        "deb http://deb.example/debian-security bookworm-security main contrib",
    ]


def test_wheelhouse_holds_exactly_the_hashed_pins_of_both_images() -> None:
    pins = images.wheelhouse_pins()
    assert [f"{pin.name}=={pin.version}" for pin in pins] == [
        "certifi==2026.10.19.post1", "cffi==2.1.1", "charset-normalizer==3.5.3", "cryptography==50.0.2",
        "idna==3.20", "prometheus-client==0.26.0", "pycparser==3.12", "pyyaml==6.0.4", "requests==2.34.2",
        "setuptools==84.2.1", "tencentcloud-sdk-python-common==3.1.195", "urllib3==2.8.0"]
    assert all(pin.hashes for pin in pins)
    # The wheelhouse (cached; `make setup` makes it): one wheel per pin, each with its hash.
    wheels = sorted(images.ensure_base().wheelhouse.glob("*.whl"))
    assert [images.wheel_name_version(wheel.name)[0] for wheel in wheels] == [pin.name for pin in pins]
    for wheel, pin in zip(wheels, pins, strict=True):
        assert images.file_sha256(wheel) in pin.hashes


def test_requirements_files_refuse_what_pip_require_hashes_refuses() -> None:
    text = "# comment\nurllib3==2.8.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    assert images.parse_requirements(text, "r.txt") == [images.Pin("urllib3", "2.8.0", ("a" * 64,))]
    assert images.parse_requirements(images.render_requirements(images.parse_requirements(text, "r"), ["x"]),
                                     "r") == images.parse_requirements(text, "r")
    with pytest.raises(images.ImageError, match=r"r\.txt: urllib3==2\.8\.0 has no --hash=sha256"):
        images.parse_requirements("urllib3==2.8.0\n", "r.txt")
    with pytest.raises(images.ImageError, match=r"r\.txt: 'urllib3>=2' is not NAME==VERSION"):
        images.parse_requirements("urllib3>=2 --hash=sha256:" + "a" * 64 + "\n", "r.txt")
    with pytest.raises(images.ImageError, match=r"'--hash=md5:00' is not --hash=sha256"):
        images.parse_requirements("urllib3==2.8.0 --hash=md5:00\n", "r.txt")


def test_pin_rewrites_only_the_base_image_digest() -> None:
    dockerfile = (REPO_ROOT / "controller" / "Dockerfile").read_text()
    new = "sha256:" + "b" * 64
    rewritten = images.rewrite_pin(dockerfile, new, "Dockerfile")
    assert images.pinned_base(rewritten, "Dockerfile") == f"python:3.11-slim@{new}"
    assert rewritten.replace(new, "") == dockerfile.replace(images.pinned_base(dockerfile, "D").split("@")[1], "")
    with pytest.raises(images.ImageError, match="not a digest"):
        images.rewrite_pin(dockerfile, "latest", "Dockerfile")
    with pytest.raises(images.ImageError, match=r"Dockerfile: needs exactly one 'ARG BASE_IMAGE=python:3\.11-slim@"):
        images.rewrite_pin("FROM python:3.11-slim\n", new, "Dockerfile")


def test_clear_errors_for_missing_prerequisites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_engine, "DOCKERD", "/nonexistent/dockerd")
    with pytest.raises(docker_engine.EngineError, match=r"apt-get install docker\.io"):
        docker_engine.check_engine_prerequisites()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(docker_engine.EngineError, match="needs root"):
        docker_engine.check_engine_prerequisites()


@pytest.mark.long
def test_forced_rebuild_gives_the_same_tags_and_leaves_nothing(built: list[images.BuiltImage]) -> None:
    starts = docker_engine.DockerEngine.starts
    rebuilt = images.build_images(force=True)
    assert rebuilt == built and not any(image.cached for image in rebuilt)
    assert docker_engine.DockerEngine.starts == starts + 1
    assert own_leftovers() == []
    for image in rebuilt:
        assert archive_repo_tags(image.archive) == [image.ref]
