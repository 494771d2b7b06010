"""The private registry: htpasswd auth, TLS from our CA, skopeo push/pull, password change, clean stop."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness import REPO_ROOT, oci, pki, registry
from harness.processes import pid_alive

HOSTNAME = "tcr-e2e-abc.tencentcloudcr.com"
USERNAME = "100012345678"
PASSWORD = "s3cret-Pa55word-7f1c9"
Factory = Callable[..., registry.PrivateRegistry]


def _get(reg: registry.PrivateRegistry, path: str = "/v2/", *, password: str | None = None,
         context: ssl.SSLContext | None = None) -> int:
    request = urllib.request.Request(f"https://{reg.listen}{path}")
    # distribution answers 404 for an OCI manifest a client does not say it accepts.
    request.add_header("Accept", oci.MEDIA_TYPE_MANIFEST)
    if password is not None:
        token = base64.b64encode(f"{USERNAME}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = context or ssl.create_default_context(cafile=str(reg.ca_file))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def _inspect(reg: registry.PrivateRegistry, reference: str, *, password: str | None = None,
             cert_dir: bool = True) -> subprocess.CompletedProcess[str]:
    """`skopeo inspect --raw docker://LISTEN/reference` with (or without) credentials and the CA."""
    tls = ["--cert-dir", str(reg.cert_dir)] if cert_dir else []
    image = f"docker://{reg.listen}/{reference}"
    if password is None:
        return _skopeo("inspect", "--raw", "--no-creds", *tls, image)
    with reg.auth_file(reg.listen, password=password) as auth:
        return _skopeo("inspect", "--raw", "--authfile", str(auth), *tls, image)


def _cmdlines() -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                out[int(entry.name)] = (entry / "cmdline").read_bytes()
    return out


def test_config_tls_and_bcrypt_htpasswd(running_registry: registry.PrivateRegistry) -> None:
    config = yaml.safe_load(running_registry.config_path.read_text())
    assert config["http"]["addr"] == running_registry.listen
    assert config["auth"]["htpasswd"]["path"] == str(running_registry.htpasswd_path)
    assert config["storage"]["filesystem"]["rootdirectory"] == str(running_registry.directory / "storage")
    line = running_registry.htpasswd_path.read_text()
    assert line.startswith(f"{USERNAME}:$2y$") and line.count("\n") == 1  # bcrypt, one user
    assert running_registry.htpasswd_path.stat().st_mode & 0o777 == 0o600
    assert running_registry.config_path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in running_registry.cert_dir.iterdir()) == ["ca.crt"]
    assert running_registry.address == f"{HOSTNAME}:{running_registry.port}"


def test_anonymous_and_wrong_password_are_refused_right_one_accepted(
    running_registry: registry.PrivateRegistry, pause_archive: oci.ImageInfo
) -> None:
    assert _get(running_registry) == 401
    assert _get(running_registry, password="wrong") == 401
    assert _get(running_registry, password=PASSWORD) == 200
    digest = running_registry.push(pause_archive.archive, "library/pause", "1.0", via=running_registry.listen)
    manifest = f"/v2/library/pause/manifests/{digest}"
    assert _get(running_registry, manifest) == 401
    assert _get(running_registry, manifest, password="wrong") == 401
    assert _get(running_registry, manifest, password=PASSWORD) == 200
    anonymous = _inspect(running_registry, "library/pause:1.0")
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower()
    wrong = _inspect(running_registry, "library/pause:1.0", password="wrong")
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()
    assert _inspect(running_registry, "library/pause:1.0", password=PASSWORD).returncode == 0


def test_push_then_pull_by_digest(running_registry: registry.PrivateRegistry, tmp_path: Path) -> None:
    image = oci.private_test_image(tmp_path / "app.tar", f"{HOSTNAME}/team/app:v1", "push-then-pull")
    digest = running_registry.push(image.archive, "team/app", "v1", via=running_registry.listen)
    assert digest == image.manifest_digest  # skopeo kept our manifest byte for byte
    assert not list(running_registry.directory.glob("auth-*"))  # the auth file is gone

    by_digest = _inspect(running_registry, f"team/app@{digest}", password=PASSWORD)
    assert by_digest.returncode == 0, by_digest.stderr
    assert json.loads(by_digest.stdout)["layers"][0]["digest"] == image.layer_digest
    source = f"docker://{running_registry.listen}/team/app@{digest}"
    with running_registry.auth_file(running_registry.listen) as auth:
        pulled = _skopeo("copy", "--quiet", "--src-authfile", str(auth), "--src-cert-dir",
                         str(running_registry.cert_dir), source, f"dir:{tmp_path / 'pulled'}")
    assert pulled.returncode == 0, pulled.stderr
    layer = (tmp_path / "pulled" / image.layer_digest.split(":")[1]).read_bytes()
    archived = subprocess.run(["tar", "-xOf", str(image.archive), f"blobs/sha256/{image.layer_digest.split(':')[1]}"],
                              capture_output=True, check=True).stdout
    assert layer == archived


def test_password_change_old_refused_new_accepted(make_registry: Factory, pause_archive: oci.ImageInfo) -> None:
    reg = make_registry()
    pid = reg.process.pid if reg.process else 0
    reg.push(pause_archive.archive, "library/pause", "1.0", via=reg.listen)
    new_password = "n3w-Pa55word-after-rotation"
    reg.set_password(new_password)
    assert reg.password == new_password
    assert _get(reg, password=PASSWORD) == 401
    assert _get(reg, password=new_password) == 200
    assert _inspect(reg, "library/pause:1.0", password=PASSWORD).returncode != 0
    assert _inspect(reg, "library/pause:1.0", password=new_password).returncode == 0
    assert reg.process is not None and reg.process.pid == pid  # distribution 2.8 re-reads htpasswd: no restart
    # Pushing uses the new password too.
    assert reg.push(pause_archive.archive, "library/pause", "again", via=reg.listen) == pause_archive.manifest_digest
    # Two changes within one clock tick still take effect (the file's mtime always moves).
    reg.set_password("third")
    reg.set_password("fourth")
    assert _get(reg, password="third") == 401
    assert _get(reg, password="fourth") == 200


def test_tls_verifies_with_the_ca_only(running_registry: registry.PrivateRegistry,
                                        authority: pki.CertificateAuthority) -> None:
    with pytest.raises(urllib.error.URLError) as refused:
        _get(running_registry, context=ssl.create_default_context())  # system roots only
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    assert _get(running_registry, context=ssl.create_default_context(cadata=authority.cert_pem.decode())) == 401
    # Another CA's certificate does not vouch for it either.
    stranger = ssl.create_default_context(cadata=pki.CertificateAuthority("stranger").cert_pem.decode())
    with pytest.raises(urllib.error.URLError):
        _get(running_registry, context=stranger)

    # The certificate names the hostname (a SAN) and the listen IP; nothing else.
    context = ssl.create_default_context(cafile=str(running_registry.ca_file))
    for name in (HOSTNAME, "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", running_registry.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() is not None
    with socket.create_connection(("127.0.0.1", running_registry.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="other.tencentcloudcr.com")

    without_ca = _inspect(running_registry, "library/none:1", password=PASSWORD, cert_dir=False)
    assert without_ca.returncode != 0 and "certificate" in without_ca.stderr.lower()


def test_no_password_in_logs_files_or_command_lines(make_registry: Factory, pause_archive: oci.ImageInfo) -> None:
    reg = make_registry()
    secrets = [PASSWORD.encode(), base64.b64encode(f"{USERNAME}:{PASSWORD}".encode())]
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pid, cmdline in _cmdlines().items():
                if any(secret in cmdline for secret in secrets):
                    seen.append(f"{pid}: {cmdline!r}")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for tag in ("a", "b", "c"):  # skopeo and htpasswd run while the watcher samples /proc
            reg.push(pause_archive.archive, "library/pause", tag, via=reg.listen)
        reg.set_password(PASSWORD)
        _get(reg, password="wrong")
        _get(reg, password=PASSWORD)
    finally:
        stop.set()
        watcher.join()
    assert seen == []
    assert reg.process is not None
    assert str(reg.config_path).encode() in Path(f"/proc/{reg.process.pid}/cmdline").read_bytes()
    for path in reg.directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(secret in data for secret in secrets), path
    assert b"authorized request" in reg.log_path.read_bytes()  # the log is written, without secrets


def test_stop_leaves_no_process(make_registry: Factory) -> None:
    reg = make_registry()
    assert reg.process is not None
    pid = reg.process.pid
    assert Path(f"/proc/{pid}/exe").resolve() == Path(registry.REGISTRY_BINARY).resolve()
    reg.stop()
    assert not pid_alive(pid)
    assert not [p for p, cmd in _cmdlines().items() if str(reg.config_path).encode() in cmd]
    with pytest.raises(urllib.error.URLError):
        _get(reg)
    reg.stop()  # idempotent


def test_restart_keeps_images_and_password(make_registry: Factory, pause_archive: oci.ImageInfo) -> None:
    reg = make_registry()
    reg.push(pause_archive.archive, "library/pause", "1.0", via=reg.listen)
    reg.set_password("after-restart")
    reg.restart()
    assert _get(reg, password="after-restart") == 200
    assert _inspect(reg, "library/pause:1.0", password="after-restart").returncode == 0


def test_command_prefix_runs_registry_probe_and_skopeo_behind_it(make_registry: Factory,
                                                                 pause_archive: oci.ImageInfo) -> None:
    reg = make_registry(command_prefix=("/usr/bin/env", "TCR_ADDON_PREFIXED=1"))
    assert reg.process is not None
    environ = Path(f"/proc/{reg.process.pid}/environ").read_bytes().split(b"\0")
    assert b"TCR_ADDON_PREFIXED=1" in environ
    assert reg.push(pause_archive.archive, "library/pause", "1.0", via=reg.listen) == pause_archive.manifest_digest


def test_a_registry_started_with_tie_to_parent_dies_with_its_parent(tmp_path: Path) -> None:
    parent_script = textwrap.dedent(f"""
        import socket, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO_ROOT / 'scripts')!r})
        from harness import pki, registry
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        reg = registry.PrivateRegistry(Path({str(tmp_path / 'reg')!r}), hostname={HOSTNAME!r},
            listen=f"127.0.0.1:{{port}}", ca=pki.CertificateAuthority(), username="u", password="p",
            tie_to_parent=True)
        reg.start()
        reg.wait_ready()
        print(reg.process.pid, flush=True)
        time.sleep(600)
    """)
    # A child subreaper between us and the parent: the orphaned registry is reaped there, not left
    # a zombie of init; the reaper exits once every descendant is gone.
    reaper_script = textwrap.dedent(f"""
        import ctypes, os, subprocess, sys
        ctypes.CDLL("libc.so.6").prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
        parent = subprocess.Popen([sys.executable, "-c", {parent_script!r}], stdout=subprocess.PIPE, text=True)
        print(parent.pid, parent.stdout.readline().strip(), flush=True)
        while True:
            try:
                os.wait()
            except ChildProcessError:
                break
    """)
    reaper = subprocess.Popen([sys.executable, "-c", reaper_script], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert reaper.stdout is not None
        pids = [int(pid) for pid in reaper.stdout.readline().split()]
        parent, child = pids
        assert pid_alive(child)
        os.kill(parent, signal.SIGKILL)
        assert reaper.wait(15) == 0  # the registry died with its parent and was reaped
        assert not pid_alive(child)
    finally:
        if reaper.poll() is None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            reaper.kill()
        reaper.wait()


def test_bad_addresses_and_usernames_are_refused(tmp_path: Path, authority: pki.CertificateAuthority) -> None:
    with pytest.raises(registry.RegistryError, match="no port"):
        registry.PrivateRegistry(tmp_path, hostname=HOSTNAME, listen="127.0.0.1", ca=authority,
                                 username="u", password="p")
    with pytest.raises(registry.RegistryError, match="username"):
        registry.htpasswd_line("a:b", "p")
    assert registry.split_host_port("[::1]:5000") == ("::1", 5000)
