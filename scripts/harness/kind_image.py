"""`make kind-image`: a kind node image for the pinned Kubernetes, built here with no pulls.

kind's node image normally comes from a registry. Here unmodified kind builds one with
`kind build node-image --type file`, from a Kubernetes server tarball and a base image that this
module makes, inside the throw-away Docker engine of `harness.engine`:

- **Base image** (what kind's images/base is): a Debian root filesystem from `mmdebstrap` (systemd,
  iptables, nftables, conntrack, iproute2, runc, the CNI plugins …), kind's own images/base/files
  (read from the kind Go module), our containerd and crictl, the guard over host-wide sysctls
  (`harness.sysctl_guard`) and a bridge CNI config; built with the classic builder.
- **Kubernetes tarball** (what a Kubernetes release ships): kubeadm, kubelet and kubectl from our
  Kubernetes build, and the four component image archives, written in pure Python (`harness.oci`):
  the binary FROM scratch, kube-proxy over the Debian root filesystem (for iptables).
  kube-proxy.tar also carries the other images the node runs: our pause (the containerd sandbox
  image), etcd and coredns, which the cluster names through kubeadm's `imageRepository`/`imageTag`
  (`cluster_config`). kind reads every image name of an archive from its `repositories` file, and
  pulls any image it wants that no archive holds: kubeadm's default etcd and coredns, kindnetd and
  local-path-provisioner. Those go in as placeholders (a text file, never run) so nothing is pulled.
- **Finish**: the placeholders are deleted from the node's containerd, the default CNI manifest is
  removed (the cluster uses the baked bridge config: `networking.disableDefaultCNI`), and the
  default storage manifest becomes a StorageClass `standard` with no provisioner: a PVC waits for a
  PersistentVolume someone makes. local-path-provisioner is not built (its module is not served
  here at kind's version, and the chart uses no volume).

The image archive (`docker save`) is cached in CACHE/kind-node-<key>/ under a hash of every input.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness import images, oci, sysctl_guard, tools
from harness.engine import LOG_DIR, DockerEngine, EngineError

RECIPE_VERSION = "1"
OWN_REGISTRY = images.REGISTRY
NODE_REPOSITORY = f"{OWN_REGISTRY}/kind-node"
ETCD_REF = f"{OWN_REGISTRY}/etcd:{tools.ETCD_VERSION}"
COREDNS_REF = f"{OWN_REGISTRY}/coredns:{tools.COREDNS_VERSION}"
# What kind's images/base installs, from this machine's Debian mirror (runc and the CNI plugins too).
ROOTFS_PACKAGES = (
    "systemd", "dbus", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
    "libseccomp2", "pigz", "bash", "ca-certificates", "curl", "jq", "procps", "runc", "containernetworking-plugins",
)
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
POD_SUBNET = "10.244.0.0/16"  # kind's default podSubnet
NODE_POD_RANGE = "10.244.0.0/24"  # the one node's share of it
STORAGE_MANIFEST = """\
# No storage provisioner in this offline node image: a PVC of class `standard` waits until someone
# creates a matching PersistentVolume (local-path-provisioner is not built here).
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
"""
PLACEHOLDER_NOTE = (b"A placeholder that kind build node-image preloads instead of pulling; "
                    b"harness.kind_image deletes it from the node image before the image is used.\n")
# kind's base Dockerfile, for the classic builder (no COPY --chmod: the context holds the modes).
BASE_DOCKERFILE = """\
FROM {rootfs_ref}
COPY kind-files/ /
COPY ours/ /
RUN chmod 755 /kind /kind/bin \\
    && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \\
    && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
       /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
       /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
    && rm -f /usr/lib/sysctl.d/*.conf /etc/sysctl.d/99-sysctl.conf \\
    && mkdir -p /opt/cni/bin /etc/kubernetes/manifests \\
    && for plugin in {cni_plugins}; do ln -sf /usr/lib/cni/$plugin /opt/cni/bin/$plugin; done \\
    && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
    && systemctl mask systemd-binfmt.service
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
"""
ENTRYPOINT_CHANGE = 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]'


class KindImageError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[kind-image] {message}", flush=True)


# -- pure parts: configs the image carries, and what kind wants ---------------------------------


def cri_base_spec(default_spec: Mapping[str, object]) -> dict[str, object]:
    """kind's cri-base.json from `ctr oci spec`: the product-files hook added, rlimits dropped."""
    spec = json.loads(json.dumps(default_spec))
    hooks = spec.setdefault("hooks", {})
    hooks.setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
    spec.get("process", {}).pop("rlimits", None)
    return dict(spec)


def containerd_config(kind_config: str, sandbox_image: str) -> str:
    """kind's containerd config, with our sandbox image, and oom_score_adj kept within what the
    node container may set (kind's `--privileged` node runs without CAP_SYS_RESOURCE here)."""
    changes = {
        r'(?m)^(\s*sandbox_image\s*=\s*)"[^"]*"': rf'\g<1>"{sandbox_image}"',
        r"(?m)^(\s*restrict_oom_score_adj\s*=\s*)false": r"\g<1>true",
    }
    text = kind_config
    for pattern, replacement in changes.items():
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise KindImageError(f"kind's containerd config changed: {pattern!r} matched {count} times")
    return text


def bridge_conflist(node_range: str = NODE_POD_RANGE) -> str:
    """One node's Pod network: a bridge with host-local addresses, masquerade and port mapping."""
    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "kind-bridge",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": node_range}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2) + "\n"


def placeholders(wanted: Iterable[str], provided: Iterable[str]) -> list[str]:
    """The images kind will preload that no archive holds (each would be a pull)."""
    have = set(provided)
    return sorted({ref for ref in wanted if ref not in have})


def kind_constants(source: str) -> dict[str, str]:
    """`const name = "value"` string constants of a Go source file."""
    return dict(re.findall(r'(?m)^const (\w+) = "([^"]+)"', source))


def cluster_config(name: str) -> str:
    """The kind cluster config this node image needs: the baked CNI, our etcd and coredns through
    kubeadm's imageRepository/imageTag, and a kubelet that runs on this machine's cgroup v1."""
    # kubeadm names them <imageRepository>/etcd:<imageTag> and <imageRepository>/coredns:<imageTag>.
    etcd_name, etcd_tag = oci.split_ref(ETCD_REF)
    dns_name, dns_tag = oci.split_ref(COREDNS_REF)
    return f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {name}
networking:
  ipFamily: ipv4
  disableDefaultCNI: true
  podSubnet: {POD_SUBNET}
nodes:
  - role: control-plane
kubeadmConfigPatches:
  - |
    kind: ClusterConfiguration
    etcd:
      local:
        imageRepository: {etcd_name.rsplit("/", 1)[0]}
        imageTag: {etcd_tag}
    dns:
      imageRepository: {dns_name.rsplit("/", 1)[0]}
      imageTag: {dns_tag}
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
"""


# -- inputs and the cache -----------------------------------------------------------------------


def kind_module_dir() -> Path:
    """The kind Go module's source (its images/base/files and its preloaded image names)."""
    proc = subprocess.run([tools.go_binary(), "mod", "download", "-json", f"sigs.k8s.io/kind@{tools.KIND_VERSION}"],
                          capture_output=True, text=True, env=dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local"),
                          cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise KindImageError(f"cannot download sigs.k8s.io/kind@{tools.KIND_VERSION}: {proc.stderr[-2000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Inputs:
    kind_dir: Path
    sources: tuple[str, ...]
    pause_digest: str

    @functools.cached_property
    def rootfs_key(self) -> str:
        return images.digest("kind-rootfs", images.SUITE, *ROOTFS_PACKAGES, *images.DPKG_OPTIONS, *self.sources)[:12]

    @functools.cached_property
    def key(self) -> str:
        versions = (tools.KIND_VERSION, tools.KUBERNETES_VERSION, tools.CONTAINERD_VERSION, tools.CRICTL_VERSION,
                    tools.COREDNS_VERSION, tools.ETCD_VERSION)
        recipe = (BASE_DOCKERFILE, STORAGE_MANIFEST, bridge_conflist(), sysctl_guard.kind_init_script(),
                  cluster_config(""))
        return images.digest(RECIPE_VERSION, self.rootfs_key, *versions, *recipe, self.pause_digest,
                             tree_digest(self.kind_dir / "images" / "base" / "files"),
                             *sorted(self.preloaded_by_kind().values()))[:12]

    @property
    def rootfs(self) -> Path:
        return tools.cache_root() / f"kind-rootfs-{self.rootfs_key}" / "rootfs.tar"

    @property
    def directory(self) -> Path:
        return tools.cache_root() / f"kind-node-{self.key}"

    @property
    def archive(self) -> Path:
        return self.directory / "node-image.tar"

    @property
    def ref(self) -> str:
        return f"{NODE_REPOSITORY}:{tools.KUBERNETES_VERSION}-{self.key}"

    def preloaded_by_kind(self) -> dict[str, str]:
        """The images kind preloads besides kubeadm's: its CNI (kindnetd) and storage images."""
        constants: dict[str, str] = {}
        for name in ("const_cni.go", "const_storage.go"):
            constants.update(kind_constants((self.kind_dir / "pkg" / "build" / "nodeimage" / name).read_text()))
        wanted = {k: v for k, v in constants.items() if k.endswith("Image")}
        if not wanted:
            raise KindImageError("found no preloaded image names in kind's pkg/build/nodeimage")
        return wanted


def inputs() -> Inputs:
    pause = hashlib.sha256(oci.PAUSE_SOURCE.read_bytes()).hexdigest()
    return Inputs(kind_module_dir(), tuple(images.apt_sources()), pause)


@dataclass(frozen=True)
class NodeImage:
    ref: str
    archive: Path
    cached: bool


def cached_image(found: Inputs) -> NodeImage | None:
    if (found.directory / "manifest.json").exists() and found.archive.exists():
        return NodeImage(found.ref, found.archive, cached=True)
    return None


# -- the build -----------------------------------------------------------------------------------


def ensure_rootfs(found: Inputs) -> Path:
    if found.rootfs.exists():
        log(f"root filesystem: cached ({found.rootfs.parent.name})")
        return found.rootfs
    started = time.monotonic()
    log(f"root filesystem: mmdebstrap {images.SUITE} with {', '.join(ROOTFS_PACKAGES)} (a minute or two) …")
    images.fill_cache_dir(found.rootfs.parent, lambda out: images.mmdebstrap(
        out / "rootfs.tar", ROOTFS_PACKAGES, found.sources, "mmdebstrap-kind.log"))
    log(f"root filesystem: made in {time.monotonic() - started:.0f} s")
    return found.rootfs


def ensure_binaries() -> dict[str, Path]:
    """Every binary the image holds, built from Go modules if not cached."""
    tools.install(["kubeadm", "crictl", "coredns", "kind", "etcd", *tools.CONTAINERD_COMMANDS])
    directory = tools.ensure_kubernetes(tools.KUBERNETES_NEWEST, node=True)
    found = {name: directory / name for name in (*tools.NODE_COMMANDS, "kubectl", "kubeadm")}
    found.update({tool.name: tool.cached for tool in [*tools.TOOLS, *tools.KIND_IMAGE_TOOLS]
                  if tool.name in ("crictl", "coredns", "kind", "etcd", *tools.CONTAINERD_COMMANDS)})
    missing = [name for name, path in found.items() if not path.exists()]
    if missing:
        raise KindImageError(f"not built: {', '.join(missing)}")
    return found


def copy_tree_with_modes(source: Path, target: Path) -> None:
    """kind's files with the modes its Dockerfile gives: scripts 0755, the rest 0644."""
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
        else:
            executable = path.parent.name == "bin" and path.parent.parent.name in ("local", "kind")
            path.chmod(0o755 if executable else 0o644)


def write_file(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)


def base_context(found: Inputs, binaries: Mapping[str, Path], work: Path) -> Path:
    context = work / "base"
    files = found.kind_dir / "images" / "base" / "files"
    copy_tree_with_modes(files, context / "kind-files")
    ours = context / "ours"
    for name in (*tools.CONTAINERD_COMMANDS, "crictl"):
        write_file(ours / "usr" / "local" / "bin" / name, binaries[name].read_bytes(), 0o755)
    spec = subprocess.run([str(binaries["ctr"]), "oci", "spec"], capture_output=True, text=True, check=True).stdout
    write_file(ours / "etc" / "containerd" / "cri-base.json", json.dumps(cri_base_spec(json.loads(spec)), indent=2))
    write_file(ours / "etc" / "containerd" / "config.toml",
               containerd_config((files / "etc" / "containerd" / "config.toml").read_text(), oci.PAUSE_REF))
    write_file(ours / "etc" / "cni" / "net.d" / "10-kind-bridge.conflist", bridge_conflist())
    write_file(ours / "sbin" / "init", sysctl_guard.kind_init_script(), 0o755)
    for directory in [ours, *(p for p in ours.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)
    return context


def build_base(engine: DockerEngine, found: Inputs, binaries: Mapping[str, Path], work: Path) -> str:
    rootfs_ref = f"{OWN_REGISTRY}/kind-rootfs:{found.rootfs_key}"
    engine.docker("import", str(found.rootfs), rootfs_ref, timeout=900)
    context = base_context(found, binaries, work)
    base_ref = f"{OWN_REGISTRY}/kind-base:{found.key}"
    dockerfile = BASE_DOCKERFILE.format(rootfs_ref=rootfs_ref, cni_plugins=" ".join(CNI_PLUGINS))
    (context / "Dockerfile").write_text(dockerfile)
    engine.docker("build", "--network", "none", "--tag", base_ref, str(context), timeout=900,
                  log_file=LOG_DIR / "kind-base.log")
    return base_ref


def component_images(found: Inputs, binaries: Mapping[str, Path]) -> dict[str, list[oci.ImageContent]]:
    """The four archives `kind build node-image --type file` loads, by file name."""
    version = tools.KUBERNETES_VERSION

    def scratch(ref: str, binary: Path, target: str, base_layer: Path | None = None) -> oci.ImageContent:
        return oci.ImageContent(ref, {target: oci.FileSpec(binary.read_bytes(), 0o755)}, [target],
                                base_layer=base_layer, compresslevel=1)

    archives = {
        f"{name}.tar": [scratch(f"registry.k8s.io/{name}:{version}", binaries[name], f"/usr/local/bin/{name}")]
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    }
    extras = [
        scratch(f"registry.k8s.io/kube-proxy:{version}", binaries["kube-proxy"], "/usr/local/bin/kube-proxy",
                found.rootfs),
        scratch(oci.PAUSE_REF, oci.pause_binary(), "/pause"),
        scratch(ETCD_REF, binaries["etcd"], "/usr/local/bin/etcd"),
        scratch(COREDNS_REF, binaries["coredns"], "/coredns"),
    ]
    provided = [image.ref for image in extras] + [ref.ref for images_ in archives.values() for ref in images_]
    for ref in placeholders(wanted_by_kind(found, binaries), provided):
        extras.append(oci.ImageContent(ref, {"/PLACEHOLDER": PLACEHOLDER_NOTE}, ["/PLACEHOLDER"]))
    archives["kube-proxy.tar"] = extras
    return archives


def wanted_by_kind(found: Inputs, binaries: Mapping[str, Path]) -> list[str]:
    """What `kind build node-image` preloads: kubeadm's image list (its pause swapped for the
    containerd sandbox image) and kind's CNI and storage images."""
    listed = subprocess.run([str(binaries["kubeadm"]), "config", "images", "list", "--kubernetes-version",
                             tools.KUBERNETES_VERSION], capture_output=True, text=True, check=True).stdout.split()
    return [*(ref for ref in listed if "pause" not in ref), oci.PAUSE_REF, *found.preloaded_by_kind().values()]


@dataclass(frozen=True)
class Placeholders:
    refs: tuple[str, ...]
    # Every image record that holds them: their manifests, and the index of the archive they came in
    # (`ctr import --digests` names it `import-<date>@sha256:…`).
    digests: tuple[str, ...]


def index_digest(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        return "sha256:" + hashlib.sha256(member.read()).hexdigest()


def write_kubernetes_tarball(found: Inputs, binaries: Mapping[str, Path], work: Path) -> tuple[Path, Placeholders]:
    """kubernetes-server-linux-amd64.tar.gz as kind's `--type file` reads it; returns it and the placeholders."""
    server = work / "kubernetes" / "server" / "bin"
    server.mkdir(parents=True)
    (work / "kubernetes" / "version").write_text(tools.KUBERNETES_VERSION + "\n")
    for name in ("kubeadm", "kubelet", "kubectl"):
        shutil.copy2(binaries[name], server / name)
    refs: list[str] = []
    digests: set[str] = set()
    for file_name, contents in component_images(found, binaries).items():
        written = oci.write_images_archive(server / file_name, contents, repositories=True)
        held = [info for info, content in zip(written, contents, strict=True) if "/PLACEHOLDER" in content.files]
        if held:
            refs += [info.ref for info in held]
            digests.update([*(info.manifest_digest for info in held), index_digest(server / file_name)])
    tarball = work / "kubernetes-server-linux-amd64.tar.gz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        tar.add(work / "kubernetes", arcname="kubernetes")
    shutil.rmtree(work / "kubernetes")
    return tarball, Placeholders(tuple(refs), tuple(sorted(digests)))


def finish(engine: DockerEngine, raw_ref: str, final_ref: str, held: Placeholders, work: Path) -> list[str]:
    """Delete the placeholders from the node's containerd, set the manifests; commit `final_ref`."""
    name = f"kind-finish-{os.getpid()}"
    engine.docker("run", "-d", "--name", name, "--network", "none", "--entrypoint", "sleep", raw_ref, "infinity")
    try:
        script = f"""set -eu
nohup containerd > /dev/null 2>&1 &
for i in $(seq 1 100); do ctr version > /dev/null 2>&1 && break; sleep 0.1; done
ctr -n k8s.io images list | awk 'NR > 1 && index(" {' '.join(held.digests)} ", " " $3 " ") {{ print $1 }}' \\
    | xargs -r ctr -n k8s.io images rm --sync > /dev/null
ctr -n k8s.io images list | awk 'NR > 1 {{ print $1, $3 }}'
pkill containerd
while pgrep containerd > /dev/null; do sleep 0.1; done
rm -f /kind/manifests/default-cni.yaml
"""
        listed = engine.docker("exec", name, "bash", "-c", script, timeout=300).stdout
        left = [line.split() for line in listed.splitlines()]
        storage = work / "default-storage.yaml"
        storage.write_text(STORAGE_MANIFEST)
        engine.docker("cp", str(storage), f"{name}:/kind/manifests/default-storage.yaml")
        # As kind's own build commits: its entrypoint back (the container ran `sleep`).
        engine.docker("commit", "--change", ENTRYPOINT_CHANGE, name, final_ref, timeout=600)
    finally:
        engine.docker("rm", "--force", name, check=False)
    stray = [ref for ref, digest in left if ref in held.refs or digest in held.digests]
    if stray:
        raise KindImageError(f"placeholders still in the node image: {stray}")
    # By name only: `ctr import --digests` also lists each image under its digest.
    return [ref for ref, _ in left if not ref.startswith(("sha256:", "import-"))]


def kind_env(engine: DockerEngine) -> dict[str, str]:
    """kind's environment: Debian's docker client first on PATH, talking to `engine`; then the tools."""
    return engine.client_env(more_path=str(tools.bin_dir()))


def build(found: Inputs) -> NodeImage:
    started = time.monotonic()
    binaries = ensure_binaries()
    ensure_rootfs(found)
    target = found.directory
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory(prefix="kind-image-", dir=partial) as tmp, \
                DockerEngine(for_kind=True) as engine:
            work = Path(tmp)
            step = time.monotonic()
            base_ref = build_base(engine, found, binaries, work)
            log(f"base image {base_ref} in {time.monotonic() - step:.0f} s")
            step = time.monotonic()
            tarball, held = write_kubernetes_tarball(found, binaries, work)
            log(f"Kubernetes tarball ({tarball.stat().st_size / 2**20:.0f} MiB; placeholders: "
                f"{', '.join(held.refs)}) in {time.monotonic() - step:.0f} s")
            step = time.monotonic()
            raw_ref = f"{found.ref}-raw"
            with (LOG_DIR / "kind-build-node-image.log").open("w") as kind_log:
                proc = subprocess.run([str(binaries["kind"]), "build", "node-image", "--type", "file",
                                       "--base-image", base_ref, "--image", raw_ref, str(tarball)],
                                      env=kind_env(engine), stdout=kind_log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=1800)
            if proc.returncode != 0:
                raise KindImageError(f"kind build node-image failed ({proc.returncode}); log tail:\n"
                                     f"{(LOG_DIR / 'kind-build-node-image.log').read_text()[-3000:]}")
            log(f"kind build node-image in {time.monotonic() - step:.0f} s")
            step = time.monotonic()
            preloaded = finish(engine, raw_ref, found.ref, held, work)
            log(f"finished (placeholders deleted; preloaded: {', '.join(preloaded)}) in "
                f"{time.monotonic() - step:.0f} s")
            step = time.monotonic()
            engine.docker("save", "--output", str(partial / "node-image.tar"), found.ref, timeout=900)
            log(f"saved ({(partial / 'node-image.tar').stat().st_size / 2**20:.0f} MiB) in "
                f"{time.monotonic() - step:.0f} s")
        (partial / "manifest.json").write_text(json.dumps(
            {"ref": found.ref, "kubernetes": tools.KUBERNETES_VERSION, "kind": tools.KIND_VERSION,
             "preloaded": preloaded, "seconds": round(time.monotonic() - started)}, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for old in tools.cache_root().glob("kind-node-*"):
        if old != target and ".partial-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    log(f"node image {found.ref} built in {time.monotonic() - started:.0f} s ({found.archive})")
    return NodeImage(found.ref, found.archive, cached=False)


def ensure(force: bool = False) -> NodeImage:
    """The node image archive: cached under its inputs' hash, or built now."""
    found = inputs()
    with tools.build_lock("kind-node"):
        images.remove_dead_partials("kind-*.partial-*")
        hit = None if force else cached_image(found)
        if hit is not None:
            log(f"cache hit: {hit.ref} ({hit.archive})")
            return hit
        return build(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make kind-image",
        description="Build the kind node image for the pinned Kubernetes offline (unmodified kind's "
        "`build node-image --type file` in a throw-away Docker engine; needs root), cached by a hash of its inputs.",
    )
    parser.add_argument("--force", action="store_true", help="build it again even if cached")
    parser.add_argument("--print-config", metavar="NAME", help="print the kind cluster config this image needs")
    args = parser.parse_args(argv)
    if args.print_config:
        print(cluster_config(args.print_config), end="")
        return 0
    try:
        image = ensure(args.force)
    except (KindImageError, EngineError, images.ImageError, tools.ToolError, oci.OciError) as error:
        print(f"make kind-image: error: {error}", file=sys.stderr)
        return 1
    print(image.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
