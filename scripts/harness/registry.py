"""A private image registry for the tests: distribution 2.8 with htpasswd (bcrypt) auth and TLS.

`PrivateRegistry` writes the registry's config, a serving certificate issued by the caller's
CA for `hostname` and the listen IP, and an htpasswd file made with `htpasswd -B -i` (password
on stdin), then runs `/usr/bin/docker-registry serve CONFIG`, optionally behind a
`command_prefix` (e.g. `nsenter --net=… --mount=…` to serve inside a node's network namespace).
`push` copies an OCI archive into it with skopeo; credentials go through a 0600 auth file that
is removed afterwards, never through a command line or a log.

distribution re-reads the htpasswd file when its modification time changes (checked on every
authenticated request), so `set_password` replaces the file atomically and the registry keeps
running.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import yaml

from harness import pki
from harness.polling import wait_for
from harness.processes import die_with_parent

REGISTRY_BINARY = "/usr/bin/docker-registry"
REALM = "tcr-addon private registry"

# Run through `command_prefix` when the registry is not reachable from here: exit 0 on a 401.
_PROBE = """
import ssl, sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2, context=ssl.create_default_context(cafile=sys.argv[2]))
except urllib.error.HTTPError as error:
    sys.exit(0 if error.code == 401 else 1)
except Exception:
    sys.exit(1)
sys.exit(1)
"""


class RegistryError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[registry] {message}", flush=True)


def split_host_port(address: str) -> tuple[str, int]:
    """`127.0.0.1:5000` / `[::1]:5000` / `name:5000` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RegistryError(f"address {address!r} has no port (want HOST:PORT)")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (temporary file in the same directory, then rename)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def htpasswd_line(username: str, password: str) -> bytes:
    """One bcrypt htpasswd line from `htpasswd -n -B -i` (the password goes to its stdin)."""
    if ":" in username or "\n" in username or "\n" in password:
        raise RegistryError("username must not contain ':' or a newline; password must not contain a newline")
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        raise RegistryError("htpasswd is not installed (Debian: apt-get install apache2-utils)")
    proc = subprocess.run([htpasswd, "-n", "-B", "-i", username], input=password.encode(), capture_output=True)
    line = proc.stdout.strip()
    if proc.returncode != 0 or not line.startswith(username.encode() + b":$2"):
        raise RegistryError(f"htpasswd failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    return line + b"\n"


class PrivateRegistry:
    """Start with `start()` + `wait_ready()` (or `with`), stop with `stop()`. Everything lives in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        hostname: str,
        listen: str,
        ca: pki.CertificateAuthority,
        username: str,
        password: str,
        command_prefix: Sequence[str] = (),
        tie_to_parent: bool = False,
    ) -> None:
        self.directory = directory.resolve()
        self.hostname = hostname
        self.listen = listen
        self.listen_host, self.port = split_host_port(listen)
        self.ca = ca
        self.username = username
        self._password = password
        self.command_prefix = tuple(command_prefix)
        self.tie_to_parent = tie_to_parent
        self.process: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.directory / "config.yml"

    @property
    def htpasswd_path(self) -> Path:
        return self.directory / "htpasswd"

    @property
    def log_path(self) -> Path:
        return self.directory / "registry.log"

    @property
    def cert_dir(self) -> Path:
        """The CA certificate alone (`ca.crt`): what skopeo's `--*-cert-dir` and containerd's certs.d want."""
        return self.directory / "certs"

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.crt"

    @property
    def address(self) -> str:
        """How clients name the registry: `hostname` (port 443) or `hostname:port`."""
        return self.hostname if self.port == 443 else f"{self.hostname}:{self.port}"

    @property
    def password(self) -> str:
        return self._password

    # -- configuration -----------------------------------------------------------------------

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "storage").mkdir(exist_ok=True)
        tls_dir = self.directory / "tls"
        tls_dir.mkdir(exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        names = [self.hostname, self.listen_host]
        ips = tuple(dict.fromkeys(name for name in names if _is_ip(name)))
        dns = tuple(dict.fromkeys(name for name in names if name and not _is_ip(name)))
        pair = self.ca.issue(self.hostname, dns_names=dns, ip_addresses=ips, server=True)
        cert, key = pair.write(tls_dir, "registry")
        self.ca_file.write_bytes(self.ca.cert_pem)
        _write_private(self.htpasswd_path, htpasswd_line(self.username, self._password))
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.directory / "storage")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": self.listen,
                "secret": secrets.token_hex(16),
                "tls": {"certificate": str(cert), "key": str(key)},
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {"htpasswd": {"realm": REALM, "path": str(self.htpasswd_path)}},
        }
        _write_private(self.config_path, yaml.safe_dump(config, sort_keys=False).encode())

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RegistryError(f"the registry on {self.listen} already runs (pid {self.process.pid})")
        if not Path(REGISTRY_BINARY).exists():
            raise RegistryError(f"{REGISTRY_BINARY} is missing (Debian: apt-get install docker-registry)")
        self._write_files()
        self._spawn()

    def _spawn(self) -> None:
        # REGISTRY_* variables would override the config file: keep them out.
        env = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [*self.command_prefix, REGISTRY_BINARY, "serve", str(self.config_path)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=die_with_parent if self.tie_to_parent else None,
            )

    def _answers_401(self) -> bool:
        url = f"https://{self.listen}/v2/"
        if self.command_prefix:
            proc = subprocess.run([*self.command_prefix, sys.executable, "-c", _PROBE, url, str(self.ca_file)],
                                  capture_output=True, timeout=30)
            return proc.returncode == 0
        try:
            urllib.request.urlopen(url, timeout=2, context=ssl.create_default_context(cafile=str(self.ca_file)))
        except urllib.error.HTTPError as error:
            return error.code == 401
        except (urllib.error.URLError, OSError):
            return False
        return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until `GET https://LISTEN/v2/` answers 401 (TLS verified with the CA); fails at once (with
        the log's tail) when the registry exits."""
        if self.process is None:
            raise RegistryError("the registry was not started")
        wait_for(self._answers_401, timeout, 0.1, what=f"the registry on {self.listen} to answer 401",
                 process=self.process, name="docker-registry", log=self.log_path, error=RegistryError,
                 timeout_message=f"the registry on {self.listen} was not ready within {timeout:.0f} s; "
                 f"see {self.log_path}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the registry's process group, SIGKILL after `grace`, reap it: no process is left."""
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again with the same files (certificate, htpasswd, storage)."""
        self.stop()
        self._spawn()
        self.wait_ready(timeout)

    def set_password(self, new_password: str) -> None:
        """Replace the htpasswd file atomically; distribution picks it up on its next request."""
        self.set_users({self.username: new_password})
        self._password = new_password

    def set_users(self, passwords: Mapping[str, str]) -> None:
        """The htpasswd file := one line per user, replaced atomically (picked up on the next request)."""
        previous = self.htpasswd_path.stat().st_mtime_ns if self.htpasswd_path.exists() else 0
        line = b"".join(htpasswd_line(user, password) for user, password in passwords.items())
        fd, temporary = tempfile.mkstemp(prefix=".htpasswd.", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
            # distribution reloads when the mtime differs: make sure it does, even within one clock tick.
            stamp = max(time.time_ns(), previous + 1_000_000)
            os.utime(temporary, ns=(stamp, stamp))
            os.replace(temporary, self.htpasswd_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def __enter__(self) -> PrivateRegistry:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # -- clients -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def auth_file(self, host: str | None = None, *, password: str | None = None) -> Iterator[Path]:
        """A containers-auth.json (0600, in `directory`) for `host` (default: `address`), removed on exit."""
        host = host or self.address
        secret = self._password if password is None else password
        token = base64.b64encode(f"{self.username}:{secret}".encode()).decode()
        holder = Path(tempfile.mkdtemp(prefix="auth-", dir=self.directory))  # 0700
        path = holder / "auth.json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"auths": {host: {"auth": token}}}, out)
            yield path
        finally:
            shutil.rmtree(holder, ignore_errors=True)

    def push(self, archive: Path, repository: str, tag: str, *, via: str | None = None,
             timeout: float = 300.0) -> str:
        """`skopeo copy oci-archive:ARCHIVE docker://HOST/repository:tag`; returns the manifest digest.

        HOST is `address` (hostname[:port]) unless `via` names another (e.g. `listen`, the IP:port,
        when the hostname only resolves inside a node). skopeo runs behind `command_prefix` too.
        """
        skopeo = shutil.which("skopeo")
        if skopeo is None:
            raise RegistryError("skopeo is not installed (Debian: apt-get install skopeo)")
        host = via or self.address
        destination = f"docker://{host}/{repository}:{tag}"
        with self.auth_file(host) as auth:
            digest_file = auth.parent / "digest"
            proc = subprocess.run(
                [*self.command_prefix, skopeo, "copy", "--quiet", "--retry-times", "2",
                 "--dest-tls-verify=true", "--dest-cert-dir", str(self.cert_dir), "--dest-authfile", str(auth),
                 "--digestfile", str(digest_file), f"oci-archive:{archive}", destination],
                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                raise RegistryError(f"skopeo copy to {destination} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            digest = digest_file.read_text().strip()
        if not digest.startswith("sha256:"):
            raise RegistryError(f"skopeo wrote no digest for {destination}: {digest!r}")
        log(f"pushed {archive.name} to {destination} ({digest})")
        return digest
