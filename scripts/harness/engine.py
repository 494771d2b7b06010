"""The throw-away Docker engine that `make images` builds with (harness.images).

Debian's dockerd (with its containerd 1.6 and runc), started for one build inside a network
namespace and a private mount namespace that this module creates, with its own data root, exec
root, socket and cgroup parent, and stopped afterwards: no process, mount, network namespace or
cgroup is left (checked). A watcher process (`reap`) does the same if the process that started
the engine dies first; `sweep_stale` removes what a killed build left.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness import REPO_ROOT, namespaces
from harness.namespaces import RUN_NETNS, cgroup_dirs, mount_points, netns_names, ns_inode, processes_in
from harness.polling import log_tail, wait_for
from harness.processes import die_with_parent, kill_until_gone, pid_alive

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client (another docker may come first on PATH)
CONTAINERD = "/usr/bin/containerd"
ENGINE_PATH = "/usr/bin:/usr/sbin:/bin:/sbin"  # Debian's containerd 1.6 and runc, not the tool cache's
ENGINE_PREFIX = "tcr-addon-img-"
LOG_DIR = REPO_ROOT / ".local" / "images"
CAPWRAPPER = Path(__file__).resolve().with_name("capwrapper.py")
CAPWRAPPER_RUNTIME = "runc-capwrapper"


class EngineError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[images] {message}", flush=True)


# -- prerequisites ---------------------------------------------------------------------------


def require(path: str, what: str) -> None:
    if not os.access(path, os.X_OK):
        raise EngineError(f"{path} not found: {what}")


def check_engine_prerequisites() -> None:
    if os.geteuid() != 0:
        raise EngineError("needs root: it creates network and mount namespaces and runs dockerd (run it as root)")
    require(DOCKERD, "install Debian's Docker engine: apt-get install docker.io (brings containerd and runc)")
    require(DOCKER, "install Debian's Docker client: apt-get install docker.io")
    require(CONTAINERD, "install Debian's containerd: apt-get install containerd")
    for name in ("runc", "unshare", "nsenter", "ip", "mount", "umount"):
        if shutil.which(name, path=ENGINE_PATH) is None:
            raise EngineError(f"{name} not found: apt-get install runc util-linux mount iproute2")


# -- the engine ------------------------------------------------------------------------------


def _die_with_parent_in_own_session() -> None:
    die_with_parent()
    os.setsid()


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise EngineError(f"'{' '.join(argv)}' failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()}")
    return proc


def _processes_of(name: str, state_dir: Path, ns_inodes: set[int]) -> set[int]:
    """Processes of engine `name`: in its namespaces or cgroups, or naming its state directory."""
    marker = f"{state_dir}/".encode()  # not a prefix of another engine's directory
    return processes_in(ns_inodes, cgroup_dirs(name), marker)


class DockerEngine:
    """A throw-away dockerd in its own network + private mount namespaces: `with DockerEngine() as engine:`.

    Everything it makes (state directory, namespaces, cgroups named after the engine) is removed
    by `stop()`, which then checks that nothing is left.
    """

    starts = 0  # engines started by this process (the tests check that a cached build starts none)
    _serial = itertools.count(1)

    def __init__(self, *, for_kind: bool = False) -> None:
        # for_kind: the runtime is runc through harness.capwrapper (kind's `--privileged` node asks for
        # capabilities this machine's bounding set lacks) and published ports go through docker-proxy
        # (kind publishes the API server's port on 127.0.0.1 of the engine's network namespace).
        self.for_kind = for_kind
        self.name = f"{ENGINE_PREFIX}{os.getpid()}-{next(self._serial)}"
        self.state = Path(tempfile.gettempdir()) / self.name
        self.socket = self.state / "docker.sock"
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.reaper: subprocess.Popen[bytes] | None = None

    @property
    def mntns(self) -> Path:
        return self.state / "mntns"

    @property
    def netns(self) -> Path:
        return RUN_NETNS / self.name

    @property
    def cgroup_parent(self) -> str:
        return "/" + self.name

    @property
    def log_path(self) -> Path:
        return LOG_DIR / "dockerd.log"

    def __enter__(self) -> DockerEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_reaper(self) -> None:
        """A watcher that tears this engine down if this process dies without doing so (SIGKILL)."""
        paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with (LOG_DIR / "reaper.log").open("ab") as reaper_log:
            self.reaper = subprocess.Popen(
                [sys.executable, "-c", "import sys; from harness.engine import reap; sys.exit(reap())"],
                stdin=subprocess.PIPE, stdout=reaper_log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        assert self.reaper.stdin is not None
        # The name goes through the pipe, not the command line, so the reaper is not one of the engine's processes.
        self.reaper.stdin.write(f"{self.name}\n{self.state}\n".encode())
        self.reaper.stdin.flush()

    def _stop_reaper(self) -> None:
        if self.reaper is None:
            return
        with contextlib.suppress(OSError):
            assert self.reaper.stdin is not None
            self.reaper.stdin.write(b"stopped\n")
            self.reaper.stdin.close()
        try:
            self.reaper.wait(30)
        except subprocess.TimeoutExpired:
            self.reaper.kill()
            self.reaper.wait()
        self.reaper = None

    def _nsenter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--mount={self.mntns}", f"--net={self.netns}", "--", *argv]

    def start(self, timeout: float = 60) -> None:
        check_engine_prerequisites()
        sweep_stale()
        started = time.monotonic()
        DockerEngine.starts += 1
        self._start_reaper()
        try:
            self._make_namespaces()
            self._start_dockerd(timeout)
        except BaseException:
            self.stop()
            raise
        log(f"dockerd {self.name} ready in {time.monotonic() - started:.1f} s (netns {self.name}, "
            f"cgroup parent {self.cgroup_parent}, state {self.state})")

    def _make_namespaces(self) -> None:
        self.state.mkdir(mode=0o700)
        namespaces.pin_mount_namespace(self.mntns)
        namespaces.add_netns(self.name)
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        inside = ["nsenter", f"--mount={self.mntns}", "--"]
        # Its copies of other namespaces' pins (if any) are not ours to hold.
        _run([*inside, "/bin/sh", "-c", namespaces.DROP_FOREIGN_PINS], check=False)
        _run([*inside, "mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run"])
        # No sysctl of this machine may change: /proc/sys is read-only for the engine.
        _run([*inside, "mount", "--bind", "/proc/sys", "/proc/sys"])
        _run([*inside, "mount", "-o", "remount,bind,ro", "/proc/sys"])

    def _start_dockerd(self, timeout: float) -> None:
        (self.state / "data").mkdir()
        (self.state / "exec").mkdir()
        config = self.state / "daemon.json"
        settings: dict[str, object] = {"deprecated-key-path": str(self.state / "key.json")}  # not /etc/docker
        if self.for_kind:
            settings["runtimes"] = {CAPWRAPPER_RUNTIME: {"path": str(self._write_capwrapper())}}
            settings["default-runtime"] = CAPWRAPPER_RUNTIME
        config.write_text(json.dumps(settings))
        argv = self._nsenter(
            DOCKERD, f"--data-root={self.state / 'data'}", f"--exec-root={self.state / 'exec'}",
            f"--host=unix://{self.socket}", f"--pidfile={self.state / 'dockerd.pid'}",
            f"--config-file={config}", f"--cgroup-parent={self.cgroup_parent}",
            "--exec-opt=native.cgroupdriver=cgroupfs", "--iptables=false", "--ip-masq=false",
            "--ip-forward=false", "--bridge=none", f"--userland-proxy={str(self.for_kind).lower()}",
        )
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self.dockerd = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={"PATH": ENGINE_PATH, "HOME": str(self.state)}, preexec_fn=_die_with_parent_in_own_session,
            )
        wait_for(self._ping, timeout, 0.1, what=f"dockerd {self.name} to answer", process=self.dockerd,
                 name="dockerd", log=self.log_path, error=EngineError,
                 timeout_message=lambda: f"dockerd was not ready within {timeout:.0f} s; log tail:\n"
                 f"{log_tail(self.log_path)}")

    def _write_capwrapper(self) -> Path:
        """The runtime dockerd is told of: one executable path, so a script that runs the wrapper."""
        runc = shutil.which("runc", path=ENGINE_PATH)
        if runc is None:
            raise EngineError("runc not found: apt-get install runc")
        wrapper = self.state / CAPWRAPPER_RUNTIME
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -I {CAPWRAPPER} --real-runc {runc} -- \"$@\"\n")
        wrapper.chmod(0o755)
        return wrapper

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status = sock.recv(4096).split(b"\r\n", 1)[0].split()
                return status[1:2] == [b"200"]
        except OSError:
            return False

    def client_env(self, *, more_path: str = "") -> dict[str, str]:
        """A docker client's environment for this engine (its own client config, classic builder); with
        `more_path`, Debian's client still first on PATH and DOCKER_HOST set, for tools that run `docker`."""
        env = {"PATH": ENGINE_PATH, "HOME": str(self.state), "DOCKER_CONFIG": str(self.state / "client"),
               "DOCKER_BUILDKIT": "0"}
        if more_path:
            env.update(PATH=f"{ENGINE_PATH}:{more_path}", DOCKER_HOST=f"unix://{self.socket}")
        return env

    def docker(self, *args: str, timeout: float = 600, check: bool = True,
               log_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run Debian's docker client against this engine (classic builder, own client config)."""
        env = self.client_env()
        argv = [DOCKER, f"--host=unix://{self.socket}", *args]
        if log_file is not None:
            with log_file.open("w") as out:
                proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                      timeout=timeout, stdin=subprocess.DEVNULL)
            output = log_file.read_text(errors="replace")
            proc = subprocess.CompletedProcess(argv, proc.returncode, output, "")
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:2])} … failed ({proc.returncode}):\n"
                             f"{(proc.stdout + proc.stderr)[-3000:]}")
        return proc

    def stop(self) -> None:
        """Stop dockerd, containerd and every container; remove namespaces, mounts, cgroups, state."""
        if self.dockerd is not None and self.dockerd.poll() is None:
            with contextlib.suppress(EngineError, subprocess.TimeoutExpired):
                ids = self.docker("ps", "--all", "--quiet", timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "--force", *ids, timeout=60)
            self.dockerd.terminate()
            try:
                self.dockerd.wait(30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(10)
        self.dockerd = None
        try:
            teardown(self.name, self.state)
        finally:
            self._stop_reaper()


def reap() -> int:
    """The reaper's side: wait until the engine's owner says "stopped" or dies, then clean up if it died."""
    name, state = sys.stdin.readline().strip(), sys.stdin.readline().strip()
    if sys.stdin.read().strip() == "stopped":
        return 0
    print(f"[images] {time.strftime('%F %T')} the owner of {name} died: tearing it down", flush=True)
    teardown(name, Path(state))
    return 0


def leftovers(name: str, state_dir: Path, ns_inodes: set[int] | None = None) -> list[str]:
    """What engine `name` left behind: processes, mounts, network namespace, cgroups, state directory."""
    found = [f"process {pid}" for pid in sorted(_processes_of(name, state_dir, ns_inodes or set()))]
    found += [f"mount {point}" for point in mount_points() if re.search(rf"/{re.escape(name)}(/|$)", point)]
    found += [f"netns {ns}" for ns in netns_names() if ns == name]
    found += [f"cgroup {path}" for path in cgroup_dirs(name)]
    if state_dir.exists():
        found.append(f"directory {state_dir}")
    return found


def _kill_all(name: str, state_dir: Path, ns_inodes: set[int], grace: float = 10.0) -> None:
    """SIGKILL what is left of the engine (dockerd was already asked to stop): shims, containers."""
    survivors = kill_until_gone(lambda: _processes_of(name, state_dir, ns_inodes), grace)
    if survivors:
        raise EngineError(f"processes of {name} do not exit: {survivors}")


def _remove_cgroups(name: str, grace: float = 10.0) -> None:
    remaining: list[Path] = []

    def removed_all() -> bool:
        remaining[:] = cgroup_dirs(name)
        for top in remaining:
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        return not remaining

    wait_for(removed_all, grace, 0.1, what=f"the cgroups of {name} removed", error=EngineError,
             timeout_message=lambda: f"cannot remove cgroups of {name}: {remaining}")


def teardown(name: str, state_dir: Path) -> None:
    """Remove everything engine `name` made; raise if anything is left. Safe to call twice."""
    ns_inodes = {inode for inode in (ns_inode(state_dir / "mntns"), ns_inode(RUN_NETNS / name)) if inode}
    _kill_all(name, state_dir, ns_inodes)
    _remove_cgroups(name)
    namespaces.unpin_mount_namespace(state_dir / "mntns")  # the namespace and every mount in it go away
    namespaces.delete_netns(name)
    below = [point for point in mount_points() if point.startswith(str(state_dir) + "/") or point == str(state_dir)]
    if below:
        raise EngineError(f"mounts left under {state_dir}, not deleting it: {below}")
    shutil.rmtree(state_dir, ignore_errors=True)
    left = leftovers(name, state_dir, ns_inodes)
    if left:
        raise EngineError(f"engine {name} left: {', '.join(left)}")


def sweep_stale() -> list[str]:
    """Tear down engines whose harness process is gone (a killed build); returns their names."""
    names: set[str] = set()
    names.update(p.name for p in Path(tempfile.gettempdir()).glob(f"{ENGINE_PREFIX}*"))
    names.update(ns for ns in netns_names() if ns.startswith(ENGINE_PREFIX))
    for hierarchy in namespaces.cgroup_hierarchies():
        with contextlib.suppress(OSError):
            names.update(p.name for p in hierarchy.glob(f"{ENGINE_PREFIX}*") if p.is_dir())
    swept = []
    for name in sorted(names):
        match = re.fullmatch(re.escape(ENGINE_PREFIX) + r"(\d+)-\d+", name)
        if not match or pid_alive(int(match.group(1))):
            continue
        log(f"removing what a killed build left: {name}")
        teardown(name, Path(tempfile.gettempdir()) / name)
        swept.append(name)
    return swept
