"""Supply chain of the two images: a tampered base image or PyPI package must not get in, and nothing in
a runtime image can fetch or build more code (no pip, setuptools or wheel).

Checked on the real artefacts: both Dockerfiles and their hashed requirements files as committed, and
images built from them by a real Docker engine (harness.images; Debian's dockerd, offline, with the
harness's local stand-in for python:3.11-slim passed as the Dockerfiles' one override).
"""

from __future__ import annotations

import re
import shutil
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import images
from harness.engine import DockerEngine

DIGEST_PINNED = re.compile(r"python:3\.11-slim@sha256:[0-9a-f]{64}")
OVERRIDE_ARGS = {"BASE_IMAGE", "BUILD_IMAGE"}
PIP_HASH_REFUSAL = "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE"
BUILD_TOOLS = ("pip", "setuptools", "wheel", "pkg_resources", "ensurepip")
# Hashed requirements next to each Dockerfile: the controller's dependencies and build backend; the
# hosts-updater's build backend only (standard library at runtime).
REQUIREMENT_FILES = {"tcr-assistant": ("requirements.txt", "build-requirements.txt"),
                     "hosts-updater": ("build-requirements.txt",)}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        logical.append(pending + raw)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in logical]


def resolve(value: str, args: dict[str, str]) -> str:
    for _ in range(5):  # ARG defaults may refer to earlier ARGs
        value = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)
    return value


def test_every_from_names_a_sha256_digest_and_the_harness_only_swaps_in_its_stand_in() -> None:
    pinned: set[str] = set()
    for spec in images.IMAGES:
        dockerfile = spec.context / "Dockerfile"
        steps = instructions(dockerfile)
        first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
        global_args = dict(rest.split("=", 1) for keyword, rest in steps[:first_from] if keyword == "ARG")
        stages: list[str] = []
        for keyword, rest in steps[first_from:]:
            if keyword != "FROM":
                continue
            words = rest.split()
            image = resolve(words[0], global_args)
            if image not in stages:
                assert DIGEST_PINNED.fullmatch(image), f"{dockerfile}: 'FROM {rest}' is {image}, not pinned by digest"
                pinned.add(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.append(words[2])
        assert set(global_args) == OVERRIDE_ARGS, f"{dockerfile}: the only build arguments before FROM"
        # A Dockerfile that pins by tag only is refused by the harness before any build.
        with pytest.raises(images.ImageError, match=r"ARG BASE_IMAGE=python:3\.11-slim@sha256:<64 hex digits>"):
            images.pinned_base(dockerfile.read_text().replace(f"@{image.split('@')[1]}", ""), str(dockerfile))
        assert images.pinned_base(dockerfile.read_text(), str(dockerfile)) == image
    assert len(pinned) == 1, f"both images on one pinned base: {pinned}"

    # The harness overrides exactly these two arguments, with its own local stand-ins (never a registry
    # name): the pinned digest is what any other build of these Dockerfiles pulls.
    argv = images.image_build_argv("tcr-addon.local/x:y", Path("/context"))
    overrides = [argv[i + 1] for i, word in enumerate(argv) if word == "--build-arg"]
    assert overrides == [f"BASE_IMAGE={images.STANDIN_REF}", f"BUILD_IMAGE={images.BUILD_STANDIN_REF}"]
    assert not {"--file", "-f", "--pull"} & set(argv) and argv[-1] == "/context"
    assert images.STANDIN_REF.startswith("tcr-addon.local/") and images.BUILD_STANDIN_REF.startswith("tcr-addon.local/")


def requirement_entries(path: Path) -> list[str]:
    """Each requirement of a requirements file, its continuation lines joined."""
    joined = path.read_text().replace("\\\n", " ")
    return [line.split("#", 1)[0].strip() for line in joined.splitlines() if line.split("#", 1)[0].strip()]


def test_every_requirement_is_pinned_with_a_hash_and_installed_with_require_hashes() -> None:
    for spec in images.IMAGES:
        commands = [command.split() for keyword, rest in instructions(spec.context / "Dockerfile")
                    if keyword == "RUN" for command in rest.split("&&")]
        for name in REQUIREMENT_FILES[spec.repository]:
            assert (spec.context / name).is_file(), f"{spec.context.name}/{name}: no hashed requirements"
            entries = requirement_entries(spec.context / name)
            assert entries, f"{spec.context.name}/{name} is empty"
            for entry in entries:
                assert re.match(r"^[A-Za-z0-9._-]+==\S+ ", entry), f"{name}: not pinned exactly: {entry}"
                assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{name}: no hash: {entry}"
            assert any({"install", "--require-hashes", "--no-deps"} <= set(words) and f"-r {name}" in " ".join(words)
                       for words in commands if words[0].endswith("/pip")), f"{name} is not installed with its hashes"
        # Every pip install either checks hashes, or installs the wheel the build stage just made from source.
        for keyword, rest in instructions(spec.context / "Dockerfile"):
            for command in rest.split("&&") if keyword == "RUN" else []:
                if " install " in command and "pip" in command:
                    assert "--require-hashes" in command or (
                        "--no-index" in command and "--no-deps" in command and "/tmp/dist/*.whl" in command), command
                if " wheel " in command and "pip" in command:
                    assert "--no-build-isolation" in command and "--no-deps" in command, command
        # The controller's runtime requirements cover its pyproject's dependencies.
        pyproject = tomllib.loads((spec.context / "pyproject.toml").read_text())
        declared = {images.normalize_name(re.split(r"[=<>!~ \[;]", d)[0])
                    for d in pyproject["project"]["dependencies"]}
        assert spec.requirement_files == REQUIREMENT_FILES[spec.repository]  # what the harness's wheelhouse holds
        locked = {pin.name for pin in images.spec_pins(spec)}
        assert declared <= locked


@pytest.fixture(scope="module")
def built() -> list[images.BuiltImage]:
    return images.build_images()


@pytest.fixture(scope="module")
def engine(built: list[images.BuiltImage]) -> Iterator[DockerEngine]:
    """A Docker engine with the stand-ins and both images as built and cached by the harness."""
    with DockerEngine() as running:
        images.load_base(running, images.ensure_base())
        for image in built:
            running.docker("load", "--input", str(image.archive))
        yield running


def tamper(wheel: Path, module: str) -> None:
    """Rewrite `wheel` in place (same name) with a line added to `module`, as a compromised index would."""
    with zipfile.ZipFile(wheel) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    assert module in {info.filename for info, _ in entries}, f"{module} not in {wheel.name}"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in entries:
            target.writestr(info, data + b"\nTAMPERED = True\n" if info.filename == module else data)


@pytest.mark.parametrize(("repository", "wheel_prefix", "module", "requirements"), [
    ("tcr-assistant", "urllib3-", "urllib3/__init__.py", "requirements.txt"),
    ("hosts-updater", "setuptools-", "setuptools/__init__.py", "build-requirements.txt"),
])
def test_a_tampered_wheel_fails_the_image_build(engine: DockerEngine, tmp_path: Path, repository: str,
                                                wheel_prefix: str, module: str, requirements: str) -> None:
    spec = next(spec for spec in images.IMAGES if spec.repository == repository)
    wheelhouse = tmp_path / "wheelhouse"
    shutil.copytree(images.ensure_base().wheelhouse, wheelhouse)
    (wheel,) = wheelhouse.glob(f"{wheel_prefix}*.whl")
    tamper(wheel, module)
    standin = f"{images.REGISTRY}/python-standin:tampered-{repository}"
    images.load_build_standin(engine, wheelhouse, standin)

    context = tmp_path / "context"
    shutil.copytree(spec.context, context, ignore=images._context_ignore)
    ref = f"{images.REGISTRY}/{repository}:tampered"
    log = tmp_path / "build.log"
    result = engine.docker(*images.image_build_argv(ref, context, build_standin=standin),
                           check=False, log_file=log)
    output = log.read_text()
    assert result.returncode != 0, f"{repository} built with a tampered {wheel.name}:\n{output[-2000:]}"
    assert PIP_HASH_REFUSAL in output, output[-2000:]
    assert f"-r {requirements}" in output and wheel.name.split("-")[0] in output.split(PIP_HASH_REFUSAL)[1]
    assert engine.docker("image", "inspect", ref, check=False).returncode != 0, "a tampered image was tagged"


def test_runtime_images_hold_no_pip_setuptools_or_wheel(engine: DockerEngine, built: list[images.BuiltImage]) -> None:
    def run(ref: str, entrypoint: str, *args: str) -> tuple[int, str]:
        proc = engine.docker("run", "--rm", "--network", "none", "--entrypoint", entrypoint, ref, *args,
                             check=False, timeout=120)
        return proc.returncode, proc.stdout + proc.stderr

    probe = ("import importlib.util as u, shutil, sys; print(sys.executable, "
             f"[m for m in {BUILD_TOOLS!r} if u.find_spec(m)], "
             "[c for c in ('pip', 'pip3', 'wheel', 'easy_install') if shutil.which(c)])")
    for image in built:
        code, system_python = run(image.ref, "/opt/venv/bin/python", "-c", "import sys; print(sys._base_executable)")
        assert code == 0, system_python
        for python in ("/opt/venv/bin/python", system_python.strip()):
            code, output = run(image.ref, python, "-c", probe)
            assert code == 0 and output.strip() == f"{python} [] []", f"{image.ref}: {output}"
            # What an attacker with a shell in the container tries: fetch a package.
            code, output = run(image.ref, python, "-m", "pip", "install", "anything")
            assert code != 0 and "No module named pip" in output, f"{image.ref} {python}: {output}"
            code, output = run(image.ref, python, "-m", "ensurepip")
            assert code != 0 and "No module named ensurepip" in output, f"{image.ref} {python}: {output}"
        code, output = run(image.ref, "sh", "-c", "ls /opt/venv/lib/python3*/site-packages")
        assert code == 0 and not re.search(r"^(pip|setuptools|wheel)\b", output, re.MULTILINE), output
    # The stand-in itself has a system pip, setuptools and wheel, as python:3.11-slim does: the
    # Dockerfiles' removal is what the checks above see.
    code, output = run(images.STANDIN_REF, "python3", "-c", probe)
    assert code == 0 and "'pip', 'setuptools', 'wheel'" in output, output
