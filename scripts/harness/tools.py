"""Build and cache the binaries the tests need, from Go modules.

Standard library only: this runs before the virtualenv exists.
Every tool is built into ``CACHE/<tool>-<version>/`` and linked from ``CACHE/bin``;
a cached build, or a binary already on PATH that reports the wanted version, is reused.

Kubernetes is pinned once per supported minor (``KUBERNETES_RELEASES``), each in its own
``CACHE/kubernetes-<version>/``, and only the commands a use needs are built: a control plane
needs kube-apiserver and kube-controller-manager, a node also kube-scheduler, kubelet and
kube-proxy. kubectl is the client: one build, of the newest minor. Helm is pinned per major
(``HELM_RELEASES``); ``TCR_ADDON_HELM`` picks the one the harness runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

# Helm by major: the newest patch of each line cleared for use (v3.22.0 is not).
HELM_RELEASES = {"3": "v3.21.4", "4": "v4.3.2"}
HELM_DEFAULT_MAJOR = "4"
# Kubernetes by minor: the even minors TKE ships and the newest upstream, each at the newest patch
# the Go module proxy serves.
KUBERNETES_RELEASES = {
    "1.30": "v1.30.14",
    "1.32": "v1.32.13",
    "1.34": "v1.34.4",
    "1.36": "v1.36.3",
    "1.37": "v1.37.2",
}
KUBERNETES_OLDEST = "1.30"
KUBERNETES_NEWEST = "1.37"
KUBERNETES_VERSION = KUBERNETES_RELEASES[KUBERNETES_NEWEST]
# What a minor needs to build here, found by building each one (docs/DESIGN.md, "Kubernetes minors
# and Helm majors"). Extra -ldflags per minor: none needed with Go 1.26 so far.
KUBERNETES_EXTRA_LDFLAGS: dict[str, str] = {}
# Staging modules the module proxy does not serve at the minor's own version: the nearest served
# patch of the same minor stands in (only for modules the built commands import).
KUBERNETES_STAGING_OVERRIDES: dict[str, dict[str, str]] = {
    "1.32": {"k8s.io/endpointslice": "v0.32.12"},  # v0.32.13: "This module version is not available"
}
ETCD_VERSION = "v3.6.16"
KIND_VERSION = "v0.33.0"
CONTAINERD_VERSION = "v2.4.2"
CRICTL_VERSION = "v1.36.0"  # kind v0.33.0's own base image pins this crictl
COREDNS_VERSION = "v1.12.4"  # the newest coredns the module proxy serves here
CHECKOV_VERSION = "3.3.30"  # a Python tool: its own virtualenv, apart from the project's pins
GO_MINIMUM = (1, 26)
CONTROL_PLANE_COMMANDS = ("kube-apiserver", "kube-controller-manager")
NODE_COMMANDS = (*CONTROL_PLANE_COMMANDS, "kube-scheduler", "kubelet", "kube-proxy")
# Control plane, client and node of the newest minor: built together from one wrapper module.
KUBERNETES_COMMANDS = (*NODE_COMMANDS, "kubectl")
CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
GO_WANTED = ".".join(map(str, GO_MINIMUM))


def cache_root() -> Path:
    override = os.environ.get("TCR_ADDON_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tcr-addon"


def bin_dir() -> Path:
    return cache_root() / "bin"


def log(message: str) -> None:
    print(f"[tools] {message}", flush=True)


class ToolError(RuntimeError):
    pass


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolError(f"no Go toolchain on PATH: install Go >= {GO_WANTED} (go.dev/dl) and re-run 'make setup'")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", out)
    if not match or (int(match.group(1)), int(match.group(2))) < GO_MINIMUM:
        raise ToolError(f"Go {out} is too old: Go >= {GO_WANTED} is needed to build helm and Kubernetes")
    return go


def run_go(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> None:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod"
    env["GOTOOLCHAIN"] = "local"
    if env_extra:
        env.update(env_extra)
    proc = subprocess.run([go_binary(), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"'go {' '.join(args[:2])} …' failed in {cwd}:\n{proc.stderr[-4000:]}")


def version_of(binary: str, args: list[str]) -> str:
    try:
        proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=90)  # checkov is slow to start
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


@dataclass(frozen=True)
class Tool:
    """One binary: how to ask its version and how to build the directory that holds it."""

    name: str
    version: str
    version_args: list[str]
    build: Callable[[Path], None]
    group: str  # binaries built together share one cache directory
    binary: str = ""  # the file's name in that directory (default: `name`)
    link: bool = True  # linked from CACHE/bin under `name`

    @property
    def file_name(self) -> str:
        return self.binary or self.name

    def cached_dir(self) -> Path:
        return cache_root() / f"{self.group}-{self.version}"

    @property
    def cached(self) -> Path:
        return self.cached_dir() / self.file_name

    def reports_version(self, path: str) -> bool:
        return self.version in version_of(path, self.version_args)

    def is_cached(self) -> bool:
        return self.cached.exists() and self.reports_version(str(self.cached))


def k8s_ldflags(module_version: str) -> str:
    major, minor = module_version.lstrip("v").split(".")[:2]
    pairs = {
        "gitVersion": module_version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in pairs.items()]
    return " ".join(flags)


def helm_client_go_minor(major: str) -> tuple[str, str]:
    """The Kubernetes version helm's own client-go stands for (what helm's Makefile passes to Helm 3)."""
    gomod = module_gomod(f"helm.sh/helm/v{major}", HELM_RELEASES[major])
    match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, flags=re.M)
    if not match:
        raise ToolError(f"helm {HELM_RELEASES[major]}'s go.mod names no k8s.io/client-go")
    return "1", match.group(1)


def build_helm(major: str, out: Path) -> None:
    version = HELM_RELEASES[major]
    module = f"helm.sh/helm/v{major}"
    flags = ["-s", "-w", f"-X {module}/internal/version.version={version}"]
    if major == "3":
        # Helm 3 takes the Kubernetes version `helm template` assumes from ldflags (1.20 without
        # them); Helm 4 reads it from its own build information.
        k8s_major, k8s_minor = helm_client_go_minor(major)
        for package in (f"{module}/pkg/chartutil", f"{module}/pkg/lint/rules"):
            flags += [f"-X {package}.k8sVersionMajor={k8s_major}", f"-X {package}.k8sVersionMinor={k8s_minor}"]
    run_go(["install", "-trimpath", "-ldflags", " ".join(flags), f"{module}/cmd/helm@{version}"],
           cwd=out, env_extra={"GOBIN": str(out)})


def build_kind(out: Path) -> None:
    go_install(f"sigs.k8s.io/kind@{KIND_VERSION}", out)


def go_install(package: str, out: Path, ldflags: str = "-s -w") -> None:
    run_go(["install", "-trimpath", "-ldflags", ldflags, package], cwd=out, env_extra={"GOBIN": str(out)})


def build_crictl(out: Path) -> None:
    go_install(f"sigs.k8s.io/cri-tools/cmd/crictl@{CRICTL_VERSION}", out,
               f"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={CRICTL_VERSION}")


def build_coredns(out: Path) -> None:
    go_install(f"github.com/coredns/coredns@{COREDNS_VERSION}", out)


def build_containerd(out: Path) -> None:
    flags = f"-s -w -X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}"
    packages = [f"github.com/containerd/containerd/v2/cmd/{name}@{CONTAINERD_VERSION}" for name in CONTAINERD_COMMANDS]
    # No cgo: the snapshotters that need C libraries are left out by build tags.
    run_go(["install", "-trimpath", "-tags", "no_btrfs no_devmapper no_zfs", "-ldflags", flags, *packages],
           cwd=out, env_extra={"GOBIN": str(out)})


def build_checkov(out: Path) -> None:
    """checkov in a virtualenv of its own (its dependencies would clash with the project's pins),
    started by a wrapper that survives the cache directory's rename (``python -m``, no shebang)."""
    venv = out / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", f"checkov=={CHECKOV_VERSION}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"pip install checkov=={CHECKOV_VERSION} failed:\n{proc.stderr[-4000:]}")
    wrapper = out / "checkov"
    wrapper.write_text('#!/bin/sh\nexec "$(dirname "$(readlink -f "$0")")/venv/bin/python" -m checkov.main "$@"\n')
    wrapper.chmod(0o755)


def write_wrapper_module(workdir: Path, name: str, go_directives: str, body: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(f"module tcr-addon.local/{name}\n\n{go_directives}\n{body}")


def build_etcd(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="etcd-build-") as tmp:
        work = Path(tmp)
        write_wrapper_module(work, "etcd", "go 1.26.0\n", "")
        run_go(["get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], cwd=work)
        flags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{ETCD_VERSION.lstrip('v')}"
        run_go(["build", "-trimpath", "-ldflags", flags, "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"],
               cwd=work)


def module_gomod(module: str, version: str) -> str:
    """A module's own go.mod, read from the module proxy (never hard-coded)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
        proc = subprocess.run([go_binary(), "mod", "download", "-json", f"{module}@{version}"],
                              cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"cannot download {module}@{version}: {proc.stderr[-2000:]}")
        return Path(json.loads(proc.stdout)["GoMod"]).read_text()


def staging_replacements(gomod: str, staging_version: str, overrides: dict[str, str] | None = None) -> list[str]:
    """Each `k8s.io/x => ./staging/...` replace becomes `k8s.io/x => k8s.io/x <published version>`
    (or the version `overrides` names for it)."""
    modules = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", gomod, flags=re.M)
    if not modules:
        raise ToolError("found no staging replacements in k8s.io/kubernetes's go.mod")
    chosen = overrides or {}
    return [f"\t{module} => {module} {chosen.get(module, staging_version)}" for module in modules]


def build_kubernetes(version: str, commands: Sequence[str], out: Path) -> None:
    gomod = module_gomod("k8s.io/kubernetes", version)
    directives = "\n".join(re.findall(r"^(?:go|godebug|toolchain)\s.*$", gomod, flags=re.M)) + "\n"
    staging_version = "v0." + version.lstrip("v").split(".", 1)[1]
    minor = ".".join(version.lstrip("v").split(".")[:2])
    body = (
        f"require k8s.io/kubernetes {version}\n\nreplace (\n"
        + "\n".join(staging_replacements(gomod, staging_version, KUBERNETES_STAGING_OVERRIDES.get(minor)))
        + "\n)\n"
    )
    ldflags = " ".join(filter(None, (k8s_ldflags(version), KUBERNETES_EXTRA_LDFLAGS.get(minor, ""))))
    with tempfile.TemporaryDirectory(prefix="k8s-build-") as tmp:
        work = Path(tmp)
        write_wrapper_module(work, "kubernetes", directives, body)
        # One `go build` for every command, so they share compiled packages.
        run_go(
            ["build", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/",
             *(f"k8s.io/kubernetes/cmd/{name}" for name in commands)],
            cwd=work,
        )


def kubernetes_release(minor: str) -> str:
    """The pinned release of a minor ("1.30" -> "v1.30.14"); a clear error for any other."""
    try:
        return KUBERNETES_RELEASES[minor]
    except KeyError:
        raise ToolError(f"Kubernetes {minor} is not pinned: choose one of {', '.join(KUBERNETES_RELEASES)}") from None


def minor_number(minor: str) -> int:
    """"1.30" -> 30."""
    return int(minor.split(".")[1])


VERSION_ARGS = {"kubectl": ["version", "--client"], "kubeadm": ["version", "-o", "short"]}


def kubernetes_tool(minor: str, name: str, commands: Sequence[str]) -> Tool:
    """One Kubernetes command of a minor; building it builds every command of `commands` missing."""
    release = kubernetes_release(minor)
    return Tool(name, release, VERSION_ARGS.get(name, ["--version"]),
                partial(build_kubernetes, release, tuple(commands)), "kubernetes",
                link=minor == KUBERNETES_NEWEST)


def helm_tool(major: str) -> Tool:
    return Tool(f"helm{major}", HELM_RELEASES[major], ["version", "--template", "{{.Version}}"],
                partial(build_helm, major), "helm", binary="helm")


TOOLS: list[Tool] = [
    *(helm_tool(major) for major in HELM_RELEASES),
    Tool("etcd", ETCD_VERSION, ["--version"], build_etcd, "etcd"),
    *(kubernetes_tool(KUBERNETES_NEWEST, name, KUBERNETES_COMMANDS) for name in KUBERNETES_COMMANDS),
    *(kubernetes_tool(KUBERNETES_OLDEST, name, NODE_COMMANDS) for name in NODE_COMMANDS),
    *(
        Tool(name, CONTAINERD_VERSION, ["-v"] if name.startswith("containerd-shim") else ["--version"],
             build_containerd, "containerd")
        for name in CONTAINERD_COMMANDS
    ),
    Tool("kind", KIND_VERSION, ["version"], build_kind, "kind"),
    Tool("checkov", CHECKOV_VERSION, ["--version"], build_checkov, "checkov"),
]
# What only the kind node image needs (`make kind-image` builds them; `make setup` does not).
KIND_IMAGE_TOOLS: list[Tool] = [
    kubernetes_tool(KUBERNETES_NEWEST, "kubeadm", ("kubeadm",)),
    Tool("crictl", CRICTL_VERSION, ["--version"], build_crictl, "crictl"),
    Tool("coredns", COREDNS_VERSION.lstrip("v"), ["-version"], build_coredns, "coredns"),  # "CoreDNS-1.12.4"
]


# Debian packages the local node, the image build and the private registry need.
DEBIAN_PACKAGES = (
    "iproute2", "util-linux", "runc", "containernetworking-plugins", "iptables", "nftables", "conntrack", "socat",
    "mmdebstrap", "skopeo", "apache2-utils", "docker.io", "docker-registry", "gcc", "libc6-dev",
)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def missing_debian_packages() -> list[str]:
    missing = []
    for package in DEBIAN_PACKAGES:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.endswith(" installed"):
            missing.append(package)
    return missing


def install_debian_packages() -> None:
    """apt-get the node's packages; no service may start (a policy-rc.d that says no, while installing)."""
    if shutil.which("dpkg-query") is None:
        log("not a Debian system: install the equivalents of " + " ".join(DEBIAN_PACKAGES) + " yourself")
        return
    missing = missing_debian_packages()
    if not missing:
        log(f"Debian packages ready ({len(DEBIAN_PACKAGES)})")
        return
    if os.geteuid() != 0:
        raise ToolError(f"Debian packages missing: {' '.join(missing)}; run 'make setup' as root or "
                        f"'apt-get install --no-install-recommends {' '.join(missing)}'")
    log(f"installing Debian packages: {' '.join(missing)} …")
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    own_policy = not POLICY_RC_D.exists()
    if own_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# tcr-addon's make setup: installing a package starts no service.\n"
                               "exit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:  # package lists may be missing or stale on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env)
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise ToolError(f"apt-get install failed:\n{proc.stderr[-3000:]}")
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    log(f"installed {len(missing)} Debian packages in {time.monotonic() - started:.0f} s")


def link(name: str, target: Path) -> None:
    bin_dir().mkdir(parents=True, exist_ok=True)
    dest = bin_dir() / name
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(target)


def on_path(tool: Tool) -> Path | None:
    """A binary on PATH (outside our own bin dir) that already reports the wanted version."""
    found = shutil.which(tool.file_name)
    if found and Path(found).resolve().parent != bin_dir().resolve() and tool.reports_version(found):
        return Path(found)
    return None


def ensure(tool: Tool, built_groups: set[str]) -> Path:
    """The tool's binary: cached, found on PATH, or built now (its group's build fills the cache)."""
    cached = tool.cached
    if tool.is_cached():
        if tool.link:
            link(tool.name, cached)
        return cached
    external = on_path(tool)
    if external is not None:
        log(f"{tool.name} {tool.version}: using {external} from PATH")
        if tool.link:
            link(tool.name, external)
        return external
    key = f"{tool.group}-{tool.version}"
    with build_lock(key):  # another process may be building the same directory: wait for it
        if key not in built_groups and not tool.is_cached():
            build_group(tool, key)
            built_groups.add(key)
    if not cached.exists() or not tool.reports_version(str(cached)):
        raise ToolError(f"{tool.name} was built but does not report version {tool.version}")
    if tool.link:
        link(tool.name, cached)
    return cached


@contextlib.contextmanager
def build_lock(key: str) -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{key}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_group(tool: Tool, key: str) -> None:
    """Build into `<dir>.partial`, then move each entry into the cache directory."""
    target_dir = tool.cached_dir()
    partial_dir = target_dir.with_name(target_dir.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    partial_dir.mkdir(parents=True)
    log(f"building {key} (cold builds take minutes on 2 cores) …")
    started = time.monotonic()
    tool.build(partial_dir)
    # Entry by entry: a directory may already hold other commands of the same version.
    target_dir.mkdir(parents=True, exist_ok=True)
    for entry in partial_dir.iterdir():
        dest = target_dir / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        entry.replace(dest)
    partial_dir.rmdir()
    log(f"built {key} in {time.monotonic() - started:.0f} s")


def ensure_kubernetes(minor: str, *, node: bool = False) -> Path:
    """The directory holding `minor`'s control plane (and with `node`, its node) commands; built if missing."""
    commands = NODE_COMMANDS if node else CONTROL_PLANE_COMMANDS
    directory = kubernetes_tool(minor, commands[0], ()).cached_dir()
    # Every plane's start-up comes here: one version probe per command when all are cached.
    missing = [name for name in commands if not kubernetes_tool(minor, name, ()).is_cached()]
    built: set[str] = set()  # the first missing command's build builds them all, in one `go build`
    for name in missing:
        ensure(kubernetes_tool(minor, name, missing), built)
    return directory


def kubernetes_minor() -> str:
    """The minor the harness runs: $TCR_ADDON_KUBERNETES (e.g. 1.30), else the newest."""
    minor = os.environ.get("TCR_ADDON_KUBERNETES") or KUBERNETES_NEWEST
    kubernetes_release(minor)
    return minor


def kubernetes_binary(name: str, minor: str | None = None) -> Path:
    """A server component of a minor (kubectl: always the newest, the one client)."""
    if name == "kubectl":
        minor = KUBERNETES_NEWEST
    return kubernetes_tool(minor or kubernetes_minor(), name, ()).cached


def helm_major() -> str:
    """The Helm major the harness runs: $TCR_ADDON_HELM (3 or 4), else Helm 4."""
    major = os.environ.get("TCR_ADDON_HELM") or HELM_DEFAULT_MAJOR
    if major not in HELM_RELEASES:
        raise ToolError(f"TCR_ADDON_HELM={major!r}: choose one of {', '.join(HELM_RELEASES)}")
    return major


def helm_path(major: str | None = None) -> Path:
    """The cached helm binary of a major (default: `helm_major()`)."""
    return helm_tool(major or helm_major()).cached


def path_dirs() -> list[Path]:
    """What goes first on PATH for the tools: the chosen helm's own directory, then CACHE/bin."""
    return [helm_path().parent, bin_dir()]


def install(names: list[str] | None = None, kubernetes: Sequence[str] = (), node: bool = False) -> None:
    if not names and not kubernetes:
        install_debian_packages()
    built: set[str] = set()
    for tool in [*TOOLS, *KIND_IMAGE_TOOLS] if not kubernetes or names else []:
        if (names and tool.name not in names) or (not names and tool in KIND_IMAGE_TOOLS):
            continue
        ensure(tool, built)
        log(f"{tool.name} {tool.version} ready")
    if helm_path(HELM_DEFAULT_MAJOR).exists():
        link("helm", helm_path(HELM_DEFAULT_MAJOR))  # `helm` on PATH: the default major
    for minor in kubernetes:
        directory = ensure_kubernetes(minor, node=node)
        log(f"Kubernetes {kubernetes_release(minor)} ({'node' if node else 'control plane'}) ready in {directory}")


def versions() -> list[str]:
    """One line per pinned version, and what builds it."""
    lines = [f"helm{major} {version}" + (" (the default helm)" if major == HELM_DEFAULT_MAJOR else "")
             for major, version in HELM_RELEASES.items()]
    for minor, release in KUBERNETES_RELEASES.items():
        if minor == KUBERNETES_NEWEST:
            built = "newest, the default: control plane, node and kubectl, built by make setup"
        elif minor == KUBERNETES_OLDEST:
            built = "oldest: control plane and node, built by make setup"
        else:
            built = "control plane, built on first use: make test-matrix"
        lines.append(f"kubernetes-{minor} {release} ({built})")
    lines += [f"{tool.name} {tool.version}" for tool in TOOLS
              if tool.group not in ("helm", "kubernetes")]
    lines += [f"{tool.name} {tool.version} (the kind node image: make kind-image)" for tool in KIND_IMAGE_TOOLS]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/tools",
        description="Install the Debian packages the local node needs (as root; no service is started), then "
        "build (from Go modules) and cache Helm 3 and Helm 4, etcd, Kubernetes (kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl of the newest minor; the node "
        "commands of the oldest; other minors' control planes on request), containerd (with ctr and its runc "
        "shim), kind, and checkov (pip, in a virtualenv of its own), keyed by version, "
        "under $TCR_ADDON_CACHE (default ~/.cache/tcr-addon). kubeadm, crictl and coredns (the kind node "
        "image's) are built only when named, as `make kind-image` does.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the Debian packages, then build or reuse every tool "
                          "(idempotent; fast when cached)")
    inst.add_argument("names", nargs="*", help="only these tools (e.g. helm3 kubectl), no Debian packages "
                      "(default: everything `make test` needs)")
    inst.add_argument("--kubernetes", action="append", default=[], metavar="MINOR",
                      help="only this Kubernetes minor's control plane (repeatable; "
                      f"one of {', '.join(KUBERNETES_RELEASES)})")
    inst.add_argument("--node", action="store_true", help="with --kubernetes: its node commands too")
    sub.add_parser("path", help="print the directory holding the tool binaries")
    sub.add_parser("versions", help="print the pinned version of each tool, and each Kubernetes minor")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.names, args.kubernetes, args.node)
        elif args.command == "path":
            print(bin_dir())
        elif args.command == "versions":
            print("\n".join(versions()))
    except ToolError as error:
        print(f"scripts/tools: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
