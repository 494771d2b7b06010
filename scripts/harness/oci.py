"""Deterministic OCI image archives, written in pure Python (no Docker, no buildkit).

`build_image_archive` writes an OCI image-layout tar archive: `oci-layout`, `index.json` and
`blobs/sha256/…` (one gzip layer, the config, the manifest). Every timestamp is 0, every owner
root, every entry sorted: the same inputs give a byte-identical archive, so the same digests.
The archive imports with `ctr -n k8s.io images import` (the index entry carries containerd's
`io.containerd.image.name` annotation with the full reference) and copies with
`skopeo copy oci-archive:ARCHIVE docker://…`.

`pause_image` is the node's sandbox image and `private_test_image` a tiny image a Pod can run,
both holding the static `pause` binary compiled from `scripts/node/pause.c`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness import REPO_ROOT, tools

PAUSE_SOURCE = REPO_ROOT / "scripts" / "node" / "pause.c"
PAUSE_REF = "tcr-addon.local/pause:1.0"
DEFAULT_ENV: Mapping[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_UNCOMPRESSED = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
EPOCH = "1970-01-01T00:00:00Z"


class OciError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[oci] {message}", flush=True)


@dataclass(frozen=True)
class FileSpec:
    """A regular file of the image's single layer."""

    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ImageInfo:
    """What was written: the reference and the digests a registry or containerd will report."""

    ref: str
    manifest_digest: str
    config_digest: str
    layer_digest: str
    diff_id: str
    archive: Path

    @property
    def repository(self) -> str:
        """The reference without its tag: `tcr-addon.local/pause`."""
        return split_ref(self.ref)[0]

    @property
    def tag(self) -> str:
        return split_ref(self.ref)[1]


def split_ref(ref: str) -> tuple[str, str]:
    """`host/name:tag` → (`host/name`, `tag`); a tag is required, a digest is refused."""
    if "@" in ref:
        raise OciError(f"image reference {ref!r}: give a tag, not a digest")
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or "/" in tag or not tag:
        raise OciError(f"image reference {ref!r} has no tag (want NAME:TAG)")
    return name, tag


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces: one byte sequence per value, so one digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _tar_info(name: str, *, size: int = 0, mode: int = 0o644, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name + "/" if directory and not name.endswith("/") else name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parent_directories(names: Iterable[str]) -> set[str]:
    directories: set[str] = set()
    for name in names:
        parent = PurePosixPath(name).parent
        while str(parent) != ".":
            directories.add(str(parent))
            parent = parent.parent
    return directories


def _deterministic_tar(entries: Mapping[str, FileSpec]) -> bytes:
    """A tar of `entries` (relative POSIX paths) with their parent directories, sorted, all stamps 0."""
    directories = _parent_directories(entries)
    clash = directories & set(entries)
    if clash:
        raise OciError(f"path is both a file and a directory: {sorted(clash)[0]}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(directories | set(entries)):
            if name in directories:
                tar.addfile(_tar_info(name, mode=0o755, directory=True))
            else:
                spec = entries[name]
                tar.addfile(_tar_info(name, size=len(spec.content), mode=spec.mode), io.BytesIO(spec.content))
    return buffer.getvalue()


def _layer_path(path: str) -> str:
    """`/pause` → `pause`; refuses empty, `..` and non-normal paths."""
    parts = PurePosixPath(path).parts
    relative = [part for part in parts if part != "/"]
    if not relative or any(part in ("..", ".") for part in relative) or "" in relative:
        raise OciError(f"bad path in image: {path!r}")
    return "/".join(relative)


def _gzip(data: bytes, compresslevel: int = 9) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 and no file name in the header: the same bytes every time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=compresslevel) as stream:
        stream.write(data)
    return buffer.getvalue()


@dataclass(frozen=True)
class ImageContent:
    """One image of an archive: `files` in a layer of their own, over an optional root filesystem."""

    ref: str
    files: Mapping[str, FileSpec | bytes]
    entrypoint: Sequence[str]
    labels: Mapping[str, str] | None = None
    env: Mapping[str, str] | None = None
    # An uncompressed tar (a Debian root filesystem), the first layer, stored as it is.
    base_layer: Path | None = None
    compresslevel: int = 9  # of the files' layer (1 for large binaries: much faster, a little larger)


@dataclass(frozen=True)
class _Blobs:
    info: ImageInfo
    descriptor: dict[str, object]  # the index's entry for the manifest
    blobs: dict[str, bytes | Path]  # blobs/sha256/<hex> -> content (a path: streamed from that file)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _image_blobs(image: ImageContent, archive: Path) -> _Blobs:
    _, tag = split_ref(image.ref)
    layer_entries: dict[str, FileSpec] = {}
    for name, value in image.files.items():
        layer_entries[_layer_path(name)] = value if isinstance(value, FileSpec) else FileSpec(value)
    layer_tar = _deterministic_tar(layer_entries)
    layer = _gzip(layer_tar, image.compresslevel)
    diff_id = sha256_digest(layer_tar)
    blobs: dict[str, bytes | Path] = {}
    layers: list[dict[str, object]] = []
    diff_ids: list[str] = []
    if image.base_layer is not None:
        base_digest = _file_sha256(image.base_layer)
        layers.append({"mediaType": MEDIA_TYPE_LAYER_UNCOMPRESSED, "digest": base_digest,
                       "size": image.base_layer.stat().st_size})
        diff_ids.append(base_digest)
        blobs["blobs/sha256/" + base_digest.split(":", 1)[1]] = image.base_layer
    layers.append({"mediaType": MEDIA_TYPE_LAYER, "digest": sha256_digest(layer), "size": len(layer)})
    diff_ids.append(diff_id)

    image_config: dict[str, object] = {
        "Entrypoint": list(image.entrypoint),
        "Env": [f"{key}={value}" for key, value in sorted((DEFAULT_ENV if image.env is None else image.env).items())],
        "WorkingDir": "/",
    }
    if image.labels:
        image_config["Labels"] = dict(image.labels)
    config = canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": "tcr-addon harness.oci"}],
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": layers,
    })
    descriptor: dict[str, object] = {
        "mediaType": MEDIA_TYPE_MANIFEST,
        "digest": sha256_digest(manifest),
        "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        # ref.name is the tag (as `docker save` and containerd's exporter write it);
        # containerd names the imported image from io.containerd.image.name.
        "annotations": {ANNOTATION_CONTAINERD_NAME: image.ref, ANNOTATION_REF_NAME: tag},
    }
    for blob in (layer, config, manifest):
        blobs["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    info = ImageInfo(ref=image.ref, manifest_digest=sha256_digest(manifest), config_digest=sha256_digest(config),
                     layer_digest=sha256_digest(layer), diff_id=diff_id, archive=archive)
    return _Blobs(info, descriptor, blobs)


def repositories_file(refs: Sequence[str], config_digests: Sequence[str]) -> bytes:
    """`docker save`'s `repositories`: {repository: {tag: id}}, every reference of the archive.

    kind's `build node-image` reads the image names of an archive from whichever of `repositories`
    and `manifest.json` comes first, and of manifest.json only its first image; so an archive of
    several images carries this file, first (`write_images_archive`)."""
    repositories: dict[str, dict[str, str]] = {}
    for ref, config_digest in zip(refs, config_digests, strict=True):
        name, tag = split_ref(ref)
        repositories.setdefault(name, {})[tag] = config_digest.split(":", 1)[1]
    return canonical_json(repositories)


def write_images_archive(path: Path, images: Sequence[ImageContent], *, repositories: bool = False) -> list[ImageInfo]:
    """Write an OCI image-layout tar archive of `images` to `path` (atomically); with `repositories`,
    a `repositories` file too, as the archive's first entry."""
    if not images:
        raise OciError("an archive needs at least one image")
    made = [_image_blobs(image, path) for image in images]
    blobs: dict[str, bytes | Path] = {}
    for one in made:
        blobs.update(one.blobs)
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [one.descriptor for one in made],
    })
    entries: dict[str, bytes | Path] = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
        **blobs,
    }
    first: dict[str, bytes | Path] = {}
    if repositories:
        first["repositories"] = repositories_file([one.info.ref for one in made],
                                                  [one.info.config_digest for one in made])
    _write_atomically(path, first, entries)
    return [one.info for one in made]


def _write_atomically(path: Path, first: Mapping[str, bytes | Path], entries: Mapping[str, bytes | Path]) -> None:
    """A deterministic tar: `first` in order, then `entries` with their parent directories, sorted."""
    directories = _parent_directories(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            ordered = [*first.items(), *sorted({**{d: None for d in directories}, **entries}.items())]
            for name, content in ordered:
                if content is None:
                    tar.addfile(_tar_info(name, mode=0o755, directory=True))
                elif isinstance(content, Path):
                    with content.open("rb") as stream:
                        tar.addfile(_tar_info(name, size=content.stat().st_size), stream)
                else:
                    tar.addfile(_tar_info(name, size=len(content)), io.BytesIO(content))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_image_archive(
    path: Path,
    ref: str,
    files: Mapping[str, FileSpec | bytes],
    entrypoint: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ImageInfo:
    """Write an OCI image-layout tar archive of one image to `path` (atomically) and return its digests.

    `files` maps absolute image paths to their contents (bytes: mode 0644); one layer holds them.
    """
    return write_images_archive(path, [ImageContent(ref, files, entrypoint, labels, env)])[0]


def pause_binary() -> Path:
    """`scripts/node/pause.c` compiled with `gcc -static -O2`, cached by the source's digest."""
    source = PAUSE_SOURCE.read_bytes()
    target_dir = tools.cache_root() / f"pause-{hashlib.sha256(source).hexdigest()[:12]}"
    target = target_dir / "pause"
    if target.is_file():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise OciError("gcc is not installed: the pause binary is compiled from scripts/node/pause.c "
                       "(Debian: apt-get install gcc libc6-dev)")
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target_dir / f"pause.partial-{os.getpid()}"
    log(f"compiling {PAUSE_SOURCE.relative_to(REPO_ROOT)} (gcc -static -O2) …")
    proc = subprocess.run(
        [gcc, "-static", "-O2", "-s", "-o", str(partial), str(PAUSE_SOURCE)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        hint = ""
        if "cannot find -lc" in proc.stderr or "crt1.o" in proc.stderr:
            hint = " (no static C library: Debian: apt-get install libc6-dev)"
        raise OciError(f"gcc -static failed{hint}:\n{proc.stderr[-2000:]}")
    os.replace(partial, target)  # atomic: concurrent builders each write their own partial file
    return target


def pause_image(path: Path) -> ImageInfo:
    """The node's sandbox image, `tcr-addon.local/pause:1.0`: just `/pause`."""
    binary = pause_binary().read_bytes()
    return build_image_archive(path, PAUSE_REF, {"/pause": FileSpec(binary, 0o755)}, ["/pause"])


def private_test_image(path: Path, ref: str, nonce: str) -> ImageInfo:
    """A tiny runnable image (`/pause`) whose digest is unique to `nonce` (kept in `/nonce`)."""
    binary = pause_binary().read_bytes()
    files: dict[str, FileSpec | bytes] = {
        "/pause": FileSpec(binary, 0o755),
        "/nonce": nonce.encode() + b"\n",
    }
    return build_image_archive(path, ref, files, ["/pause"])
