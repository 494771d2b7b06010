"""OCI image archives: byte-for-byte deterministic, valid per the image-layout spec, readable by skopeo."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import oci, tools
from harness.processes import die_with_parent

PT_INTERP = 3
# A containerd of our own: no CRI, the native snapshotter (no mounts), unpacking for linux/amd64.
CONTAINERD_CONFIG = """
version = 3
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "{root}/containerd.sock"
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
"""


def _members(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            out[member.name] = (member, extracted.read() if extracted else b"")
    return out


def _blob(members: dict[str, tuple[tarfile.TarInfo, bytes]], digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":")
    assert algorithm == "sha256"
    return members[f"blobs/sha256/{hexdigest}"][1]


def _json(data: bytes) -> Any:
    return json.loads(data)


def _skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_same_inputs_give_a_byte_identical_archive(tmp_path: Path) -> None:
    files: dict[str, oci.FileSpec | bytes] = {
        "/bin/tool": oci.FileSpec(b"#!/bin/sh\necho hi\n", 0o755), "/etc/motd": b"hello\n", "/z": b"z"}
    first = oci.build_image_archive(tmp_path / "a.tar", "example.local/x:1", files, ["/bin/tool"],
                                    labels={"b": "2", "a": "1"}, env={"A": "1"})
    time.sleep(1.1)  # a timestamp leaking in would now differ
    second = oci.build_image_archive(tmp_path / "b.tar", "example.local/x:1", dict(reversed(files.items())),
                                     ["/bin/tool"], labels={"a": "1", "b": "2"}, env={"A": "1"})
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert (first.manifest_digest, first.config_digest) == (second.manifest_digest, second.config_digest)


def test_pause_image_is_deterministic_across_builds(tmp_path: Path, pause_archive: oci.ImageInfo) -> None:
    again = oci.pause_image(tmp_path / "pause.tar")
    assert again.manifest_digest == pause_archive.manifest_digest
    assert again.archive.read_bytes() == pause_archive.archive.read_bytes()
    assert pause_archive.ref == oci.PAUSE_REF == "tcr-addon.local/pause:1.0"


def test_archive_follows_the_oci_image_layout(pause_archive: oci.ImageInfo) -> None:
    members = _members(pause_archive.archive)
    for info, _ in members.values():
        assert info.isfile() or info.isdir(), info.name
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", ""), info.name
    assert _json(members["oci-layout"][1]) == {"imageLayoutVersion": "1.0.0"}

    index = _json(members["index.json"][1])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [descriptor] = index["manifests"]
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert descriptor["digest"] == pause_archive.manifest_digest
    assert descriptor["annotations"] == {
        "io.containerd.image.name": "tcr-addon.local/pause:1.0",
        "org.opencontainers.image.ref.name": "1.0",
    }
    assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}

    # Every blob is named by the digest of its contents; every descriptor's size is right.
    blobs = {name: data for name, (_, data) in members.items() if name.startswith("blobs/sha256/")}
    for name, data in blobs.items():
        assert name == "blobs/sha256/" + hashlib.sha256(data).hexdigest()
    manifest_bytes = _blob(members, descriptor["digest"])
    assert len(manifest_bytes) == descriptor["size"]
    manifest = _json(manifest_bytes)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["config"]["digest"] == pause_archive.config_digest
    config_bytes = _blob(members, manifest["config"]["digest"])
    assert len(config_bytes) == manifest["config"]["size"]
    [layer_descriptor] = manifest["layers"]
    assert layer_descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer_descriptor["digest"] == pause_archive.layer_digest
    layer = _blob(members, layer_descriptor["digest"])
    assert len(layer) == layer_descriptor["size"]
    assert len(blobs) == 3  # manifest, config, layer: nothing unreferenced

    # The config's diff_id is the digest of the uncompressed layer; gzip carries no timestamp.
    assert layer[:2] == b"\x1f\x8b" and layer[4:8] == b"\0\0\0\0"
    layer_tar = gzip.decompress(layer)
    config = _json(config_bytes)
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]}
    assert config["rootfs"]["diff_ids"][0] == pause_archive.diff_id
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["config"]["Entrypoint"] == ["/pause"]

    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
        [pause] = tar.getmembers()
        assert (pause.name, pause.mode, pause.mtime, pause.uid, pause.gid) == ("pause", 0o755, 0, 0, 0)
        extracted = tar.extractfile(pause)
        assert extracted is not None
        assert extracted.read() == oci.pause_binary().read_bytes()


def test_files_get_their_parent_directories_and_modes(tmp_path: Path) -> None:
    info = oci.build_image_archive(tmp_path / "x.tar", "example.local/x:1",
                                   {"/usr/bin/run": oci.FileSpec(b"x", 0o700), "etc/conf": b"c"}, ["/usr/bin/run"])
    members = _members(info.archive)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(members, info.layer_digest)))) as tar:
        listing = [(m.name, m.type, m.mode) for m in tar.getmembers()]
    assert listing == [
        ("etc", tarfile.DIRTYPE, 0o755), ("etc/conf", tarfile.REGTYPE, 0o644),
        ("usr", tarfile.DIRTYPE, 0o755), ("usr/bin", tarfile.DIRTYPE, 0o755),
        ("usr/bin/run", tarfile.REGTYPE, 0o700),
    ]


@pytest.mark.parametrize("ref", ["example.local/x", "example.local/x@sha256:" + "0" * 64, "host:5000/x"])
def test_a_reference_needs_a_tag(tmp_path: Path, ref: str) -> None:
    with pytest.raises(oci.OciError, match=r"tag|digest"):
        oci.build_image_archive(tmp_path / "x.tar", ref, {"/a": b"a"}, ["/a"])


@pytest.mark.parametrize("path", ["/", "../etc/passwd", "/a/../b", ""])
def test_bad_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(oci.OciError, match="bad path"):
        oci.build_image_archive(tmp_path / "x.tar", "example.local/x:1", {path: b"a"}, ["/a"])


def test_each_nonce_gives_its_own_digest(tmp_path: Path) -> None:
    ref = "tcr-e2e-abc.tencentcloudcr.com/team/app:v1"
    one = oci.private_test_image(tmp_path / "one.tar", ref, "nonce-1")
    two = oci.private_test_image(tmp_path / "two.tar", ref, "nonce-2")
    one_again = oci.private_test_image(tmp_path / "one-again.tar", ref, "nonce-1")
    assert one.manifest_digest != two.manifest_digest
    assert one.layer_digest != two.layer_digest
    assert one_again.manifest_digest == one.manifest_digest
    members = _members(two.archive)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(members, two.layer_digest)))) as tar:
        assert sorted(tar.getnames()) == ["nonce", "pause"]
        nonce = tar.extractfile("nonce")
        assert nonce is not None and nonce.read() == b"nonce-2\n"
    assert (two.repository, two.tag) == ("tcr-e2e-abc.tencentcloudcr.com/team/app", "v1")


def test_pause_binary_is_static_cached_and_stops_on_sigterm() -> None:
    binary = oci.pause_binary()
    assert binary.parent.name.startswith("pause-") and len(binary.parent.name) == len("pause-") + 12
    stamp = binary.stat().st_mtime_ns
    assert oci.pause_binary() == binary and binary.stat().st_mtime_ns == stamp  # cached, not rebuilt

    elf = binary.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 2  # 64-bit
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    kinds = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    assert PT_INTERP not in kinds  # no dynamic loader: runs in an image with nothing else

    assert subprocess.run([binary, "-v"], capture_output=True, text=True).stdout == "tcr-addon pause 1.0\n"
    proc = subprocess.Popen([binary])
    try:
        time.sleep(0.2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_skopeo_reads_the_archive(tmp_path: Path, pause_archive: oci.ImageInfo) -> None:
    inspected = json.loads(_skopeo("inspect", f"oci-archive:{pause_archive.archive}"))
    assert inspected["Digest"] == pause_archive.manifest_digest
    assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")
    assert inspected["Layers"] == [pause_archive.layer_digest]
    # By the ref.name annotation (the tag) as well.
    raw = _skopeo("inspect", "--raw", f"oci-archive:{pause_archive.archive}:1.0")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == pause_archive.manifest_digest
    config = json.loads(_skopeo("inspect", "--config", f"oci-archive:{pause_archive.archive}"))
    assert config["config"]["Entrypoint"] == ["/pause"]

    _skopeo("copy", "--quiet", f"oci-archive:{pause_archive.archive}", f"dir:{tmp_path / 'dir'}")
    manifest = (tmp_path / "dir" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == pause_archive.manifest_digest
    layer = (tmp_path / "dir" / pause_archive.layer_digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == pause_archive.layer_digest


@contextlib.contextmanager
def _containerd() -> Iterator[list[str]]:
    """A throw-away containerd; yields the `ctr … -n k8s.io` command prefix."""
    binary, ctr = tools.bin_dir() / "containerd", tools.bin_dir() / "ctr"
    assert binary.exists() and ctr.exists(), "containerd is not installed: run 'make setup'"
    root = Path(tempfile.mkdtemp(prefix="ctrd-"))  # short: the socket path must stay under 108 bytes
    (root / "config.toml").write_text(CONTAINERD_CONFIG.format(root=root))
    with (root / "containerd.log").open("wb") as log:
        proc = subprocess.Popen([str(binary), "--config", str(root / "config.toml")], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    command = [str(ctr), "--address", str(root / "containerd.sock"), "-n", "k8s.io"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*command, "version"], capture_output=True).returncode != 0:
            assert proc.poll() is None, (root / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not answer within 30 s"
            time.sleep(0.1)
        yield command
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def test_containerd_imports_and_unpacks_the_archives(tmp_path: Path, pause_archive: oci.ImageInfo) -> None:
    app = oci.private_test_image(tmp_path / "app.tar", "tcr-e2e-abc.tencentcloudcr.com/team/app:v1", "ctr")
    with _containerd() as ctr:
        for image in (pause_archive, app):
            imported = subprocess.run([*ctr, "images", "import", str(image.archive)], capture_output=True, text=True)
            assert imported.returncode == 0, imported.stderr
        listing = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True, check=True).stdout
        rows = {line.split()[0]: line.split()[2] for line in listing.splitlines()[1:]}
        assert rows == {pause_archive.ref: pause_archive.manifest_digest, app.ref: app.manifest_digest}
        # Unpacked: one committed snapshot per image, keyed by its layer's diff_id (its chain ID).
        snapshots = subprocess.run([*ctr, "snapshots", "--snapshotter", "native", "ls"],
                                   capture_output=True, text=True, check=True).stdout
        keys = {line.split()[0] for line in snapshots.splitlines()[1:]}
        assert keys == {pause_archive.diff_id, app.diff_id}


def test_an_archive_of_several_images_names_them_all_as_kind_reads_names(tmp_path: Path) -> None:
    """kind's `build node-image` takes an archive's image names from whichever of `repositories` and
    `manifest.json` comes first (and of manifest.json only the first image); anything it wants and
    does not find there it pulls. So `repositories` comes first and names every image."""
    base = tmp_path / "rootfs.tar"
    with tarfile.open(base, "w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"test\n"))
    images = [
        oci.ImageContent("registry.k8s.io/kube-proxy:v1.37.2", {"/usr/local/bin/kube-proxy": b"p"},
                         ["/usr/local/bin/kube-proxy"], base_layer=base, compresslevel=1),
        oci.ImageContent("docker.io/kindest/kindnetd:v1", {"/PLACEHOLDER": b"x"}, ["/PLACEHOLDER"]),
        oci.ImageContent("registry.k8s.io/pause:3.10", {"/pause": b"z"}, ["/pause"]),
    ]
    written = oci.write_images_archive(tmp_path / "kube-proxy.tar", images, repositories=True)
    with tarfile.open(tmp_path / "kube-proxy.tar") as tar:
        names = tar.getnames()
    assert names[0] == "repositories" and "manifest.json" not in names
    members = _members(tmp_path / "kube-proxy.tar")
    repositories = _json(members["repositories"][1])
    assert {f"{repo}:{tag}" for repo, tags in repositories.items() for tag in tags} == {i.ref for i in images}
    index = _json(members["index.json"][1])
    assert [m["annotations"][oci.ANNOTATION_CONTAINERD_NAME] for m in index["manifests"]] == [i.ref for i in images]
    manifest = _json(_blob(members, written[0].manifest_digest))
    # The root filesystem is the first layer, stored as it is; its digest is its diff_id.
    assert manifest["layers"][0]["mediaType"] == oci.MEDIA_TYPE_LAYER_UNCOMPRESSED
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(base.read_bytes()).hexdigest()
    config = _json(_blob(members, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"], written[0].diff_id]
    with pytest.raises(oci.OciError, match="at least one image"):
        oci.write_images_archive(tmp_path / "empty.tar", [])
    with _containerd() as ctr:
        # As kind's build imports each archive.
        imported = subprocess.run([*ctr, "images", "import", "--all-platforms", "--no-unpack", "--digests",
                                   str(tmp_path / "kube-proxy.tar")], capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr
        listing = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout
        assert {i.ref for i in images} <= set(listing.split())
