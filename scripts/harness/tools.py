"""Build and cache the binaries the tests need, from Go modules.

Standard library only: this runs before the virtualenv exists.
Every tool is built into ``CACHE/<tool>-<version>/`` and linked from ``CACHE/bin``;
a cached build, or a binary already on PATH that reports the wanted version, is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HELM_VERSION = "v3.22.0"
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
KIND_VERSION = "v0.33.0"
CONTAINERD_VERSION = "v2.4.2"
CHECKOV_VERSION = "3.3.30"  # a Python tool: its own virtualenv, apart from the project's pins
GO_MINIMUM = (1, 26)
# Control plane, client and node: built together from one wrapper module.
KUBERNETES_COMMANDS = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy",
)
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
        proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=20)
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

    def cached_dir(self) -> Path:
        return cache_root() / f"{self.group}-{self.version}"

    def reports_version(self, path: str) -> bool:
        return self.version in version_of(path, self.version_args)


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


def build_helm(out: Path) -> None:
    k8s_major, k8s_minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"]
    for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {package}.k8sVersionMajor={k8s_major}", f"-X {package}.k8sVersionMinor={k8s_minor}"]
    run_go(
        ["install", "-trimpath", "-ldflags", " ".join(flags), f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        cwd=out,
        env_extra={"GOBIN": str(out)},
    )


def build_kind(out: Path) -> None:
    run_go(["install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kind@{KIND_VERSION}"],
           cwd=out, env_extra={"GOBIN": str(out)})


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


def kubernetes_gomod() -> str:
    """k8s.io/kubernetes's own go.mod, read from the module proxy (never hard-coded)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
        proc = subprocess.run(
            [go_binary(), "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
            cwd=tmp, env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ToolError(f"cannot download k8s.io/kubernetes@{KUBERNETES_VERSION}: {proc.stderr[-2000:]}")
        return Path(json.loads(proc.stdout)["GoMod"]).read_text()


def staging_replacements(gomod: str, staging_version: str) -> list[str]:
    """Each `k8s.io/x => ./staging/...` replace becomes `k8s.io/x => k8s.io/x <published version>`."""
    modules = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", gomod, flags=re.M)
    if not modules:
        raise ToolError("found no staging replacements in k8s.io/kubernetes's go.mod")
    return [f"\t{module} => {module} {staging_version}" for module in modules]


def build_kubernetes(out: Path) -> None:
    gomod = kubernetes_gomod()
    directives = "\n".join(re.findall(r"^(?:go|godebug|toolchain)\s.*$", gomod, flags=re.M)) + "\n"
    staging_version = "v0." + KUBERNETES_VERSION.lstrip("v").split(".", 1)[1]
    body = (
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n"
        + "\n".join(staging_replacements(gomod, staging_version))
        + "\n)\n"
    )
    with tempfile.TemporaryDirectory(prefix="k8s-build-") as tmp:
        work = Path(tmp)
        write_wrapper_module(work, "kubernetes", directives, body)
        # One `go build` for every command, so they share compiled packages.
        run_go(
            [
                "build", "-trimpath", "-ldflags", k8s_ldflags(KUBERNETES_VERSION), "-o", str(out) + "/",
                *(f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS),
            ],
            cwd=work,
        )


TOOLS: list[Tool] = [
    Tool("helm", HELM_VERSION, ["version", "--template", "{{.Version}}"], build_helm, "helm"),
    Tool("etcd", ETCD_VERSION, ["--version"], build_etcd, "etcd"),
    *(
        Tool(name, KUBERNETES_VERSION, ["version", "--client"] if name == "kubectl" else ["--version"],
             build_kubernetes, "kubernetes")
        for name in KUBERNETES_COMMANDS
    ),
    *(
        Tool(name, CONTAINERD_VERSION, ["-v"] if name.startswith("containerd-shim") else ["--version"],
             build_containerd, "containerd")
        for name in CONTAINERD_COMMANDS
    ),
    Tool("kind", KIND_VERSION, ["version"], build_kind, "kind"),
    Tool("checkov", CHECKOV_VERSION, ["--version"], build_checkov, "checkov"),
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


def link(tool: Tool, target: Path) -> None:
    bin_dir().mkdir(parents=True, exist_ok=True)
    dest = bin_dir() / tool.name
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(target)


def on_path(tool: Tool) -> Path | None:
    """A binary on PATH (outside our own bin dir) that already reports the wanted version."""
    found = shutil.which(tool.name)
    if found and Path(found).resolve().parent != bin_dir().resolve() and tool.reports_version(found):
        return Path(found)
    return None


def ensure(tool: Tool, built_groups: set[str]) -> None:
    cached = tool.cached_dir() / tool.name
    if cached.exists() and tool.reports_version(str(cached)):
        link(tool, cached)
        return
    external = on_path(tool)
    if external is not None:
        log(f"{tool.name} {tool.version}: using {external} from PATH")
        link(tool, external)
        return
    if tool.group not in built_groups:
        target_dir = tool.cached_dir()
        partial = target_dir.with_name(target_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        log(f"building {tool.group} {tool.version} (cold builds take minutes on 2 cores) …")
        started = time.monotonic()
        tool.build(partial)
        shutil.rmtree(target_dir, ignore_errors=True)
        partial.rename(target_dir)
        built_groups.add(tool.group)
        log(f"built {tool.group} {tool.version} in {time.monotonic() - started:.0f} s")
    if not cached.exists() or not tool.reports_version(str(cached)):
        raise ToolError(f"{tool.name} was built but does not report version {tool.version}")
    link(tool, cached)


def install(names: list[str] | None = None) -> None:
    if not names:
        install_debian_packages()
    built: set[str] = set()
    for tool in TOOLS:
        if names and tool.name not in names:
            continue
        ensure(tool, built)
        log(f"{tool.name} {tool.version} ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/tools",
        description="Install the Debian packages the local node needs (as root; no service is started), then "
        "build (from Go modules) and cache helm, etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kubectl, kubelet, kube-proxy, containerd (with ctr and its runc shim) and kind, and checkov (pip, in a "
        "virtualenv of its own), keyed by version, "
        "under $TCR_ADDON_CACHE (default ~/.cache/tcr-addon).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the Debian packages, then build or reuse every tool "
                          "(idempotent; fast when cached)")
    inst.add_argument("names", nargs="*", help="only these tools, no Debian packages (default: everything)")
    sub.add_parser("path", help="print the directory holding the tool binaries")
    sub.add_parser("versions", help="print the pinned version of each tool")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.names)
        elif args.command == "path":
            print(bin_dir())
        elif args.command == "versions":
            for tool in TOOLS:
                print(f"{tool.name} {tool.version}")
    except ToolError as error:
        print(f"scripts/tools: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
