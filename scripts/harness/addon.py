"""Run the add-on on a local control plane: the chart installed by helm, the controller as a host process.

No kubelet runs here, so the chart's Deployment never starts a Pod. Instead `tcr-assistant run`
runs on the host **with a token of the chart's own ServiceAccount** (so the chart's RBAC is what
is tested), and a helm post-renderer points the chart's ValidatingWebhookConfiguration at that
process (`url: https://localhost:PORT/…`), so every ImagePullSecret write goes through the real
API server and our webhook. The controller keeps the webhook's certificate and the caBundle
exactly as in a Pod (`--webhook-cert-secret`), with `localhost` as an extra name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import REPO_ROOT, VENV, images, tools
from harness.cluster import DEFAULT_DIR as DEFAULT_CLUSTER_DIR
from harness.cluster import ClusterError, ControlPlane, free_port, kubeconfig_yaml
from harness.node import NodeCluster, plane_class
from harness.polling import wait_for
from harness.processes import die_with_parent, terminate

CHART_DIR = REPO_ROOT / "chart"
DEFAULT_DIR = REPO_ROOT / ".local" / "addon"
RELEASE = "tcr-addon"
NAMESPACE = "tcr-assistant-system"
CONTROLLER_SERVICE_ACCOUNT = "tcr-assistant-controller-manager"
WEBHOOK_SERVICE = "tcr-assistant-webhook-service"  # the chart's (and the original's) webhook Service
POST_RENDERER = Path(__file__).resolve().parent / "local_webhook_postrender.py"
# Helm 4 runs post-renderers only as plugins: this directory holds one that runs POST_RENDERER.
HELM_PLUGINS = Path(__file__).resolve().parent / "helm-plugins"
POST_RENDERER_PLUGIN = "tcr-addon-local-webhook"
TOKEN_SECONDS = 24 * 3600
WEBHOOK_HOST = "localhost"  # a DNS name in the serving certificate the controller issues
WEBHOOK_CERT_SECRET = "tcr-assistant-webhook-server-cert"
MUTATING_CONFIGURATION = "tcr-assistant-mutating-webhook-configuration"


class AddonError(RuntimeError):
    pass


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
        input_text: str | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, input=input_text)
    if proc.returncode != 0:
        raise AddonError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} … failed:\n{proc.stderr.strip()}")
    return proc.stdout


def post_renderer_args() -> list[str]:
    """`--post-renderer` as the chosen Helm major takes it: Helm 3 an executable, Helm 4 a plugin's name
    (found through $HELM_PLUGINS, which `tool_env` sets)."""
    return ["--post-renderer", POST_RENDERER_PLUGIN if tools.helm_major() == "4" else str(POST_RENDERER)]


def tool_env(kubeconfig: Path) -> dict[str, str]:
    """This process's environment with KUBECONFIG at `kubeconfig` and the cached tools first on PATH."""
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)
    if tools.helm_major() == "4":  # Helm 3 would try to load the v1 plugin and complain
        env["HELM_PLUGINS"] = str(HELM_PLUGINS)
    env["PATH"] = os.pathsep.join([*map(str, tools.path_dirs()), env.get("PATH", "")])
    return env


@dataclass
class Addon:
    """The chart release plus the controller process, with state (certs, kubeconfig, logs) in `directory`."""

    plane: ControlPlane
    directory: Path
    values_files: list[Path] = field(default_factory=list)
    set_values: list[str] = field(default_factory=list)
    release: str = RELEASE
    namespace: str = NAMESPACE
    tie_to_parent: bool = False
    extra_args: list[str] = field(default_factory=list)  # more `tcr-assistant run` flags
    webhook_port: int = 0
    health_port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def cert_dir(self) -> Path:
        return self.directory / "webhook-certs"

    @property
    def controller_log(self) -> Path:
        return self.directory / "controller.log"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _env(self) -> dict[str, str]:
        return tool_env(self.plane.kubeconfig)

    # -- chart -------------------------------------------------------------------------------

    def helm_args(self, command: str = "upgrade") -> list[str]:
        args = [str(tools.helm_path()), command]
        if command == "upgrade":
            args.append("--install")
        args += [self.release, str(CHART_DIR), "-n", self.namespace, "--create-namespace", *post_renderer_args()]
        for values in self.values_files:
            args += ["-f", str(values)]
        for assignment in self.set_values:
            args += ["--set", assignment]
        return args

    def install(self) -> None:
        """`helm upgrade --install` the chart, webhook pointed at this host (no --wait: no Pod runs here)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.webhook_port:
            self.webhook_port = free_port()
        env = self._env()
        env["TCR_ADDON_WEBHOOK_URL"] = f"https://{WEBHOOK_HOST}:{self.webhook_port}"
        run(self.helm_args(), env=env)

    # -- controller --------------------------------------------------------------------------

    def service_account_kubeconfig(self, service_account: str, stem: str) -> Path:
        """A kubeconfig holding a TokenRequest token of `service_account` in the release namespace."""
        request = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                              "spec": {"expirationSeconds": TOKEN_SECONDS}})
        output = run(
            [str(tools.bin_dir() / "kubectl"), "create", "--raw",
             f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{service_account}/token", "-f", "-"],
            env=self._env(), input_text=request, timeout=60,
        )
        token = json.loads(output)["status"]["token"]
        path = self.directory / f"{stem}.kubeconfig"
        path.write_text(kubeconfig_yaml(self.plane.server, self.plane.ca_pem, token=token, user=service_account))
        path.chmod(0o600)
        return path

    def controller_kubeconfig(self) -> Path:
        return self.service_account_kubeconfig(CONTROLLER_SERVICE_ACCOUNT, "controller")

    def controller_argv(self, kubeconfig: Path) -> list[str]:
        self.health_port = self.health_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        # As the chart's Deployment does: the Pod webhook's caBundle too, when the chart registers it.
        pod_webhook = run([str(tools.bin_dir() / "kubectl"), "get", "mutatingwebhookconfiguration",
                           MUTATING_CONFIGURATION, "--ignore-not-found", "-o", "name"], env=self._env()).strip()
        return [
            str(VENV / "bin" / "tcr-assistant"), "run",
            f"--kubeconfig={kubeconfig}", f"--namespace={self.namespace}", "--leader-elect",
            f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            "--webhook-host=127.0.0.1", f"--webhook-port={self.webhook_port}", f"--webhook-cert-dir={self.cert_dir}",
            # As the chart's Deployment does: the controller keeps the certificate and the caBundle.
            f"--webhook-cert-secret={WEBHOOK_CERT_SECRET}", f"--webhook-cert-name={WEBHOOK_HOST}",
            *([f"--mutating-webhook-configuration={MUTATING_CONFIGURATION}"] if pod_webhook else []),
            *self.extra_args,
        ]

    def start_controller(self, timeout: float = 60) -> None:
        argv = self.controller_argv(self.controller_kubeconfig())
        log = self.controller_log.open("ab")
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent if self.tie_to_parent else None, env=self._env(),
        )
        log.close()
        self._write_state()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz answers 200; fails at once (with the log's tail) when the controller exits."""
        wait_for(self._ready, timeout, 0.1, what="tcr-assistant to be ready", process=self.process,
                 name="tcr-assistant", log=self.controller_log, error=AddonError,
                 timeout_message=f"tcr-assistant was not ready within {timeout:.0f} s; see {self.controller_log}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.health_url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop_controller(self) -> None:
        pid = self.process.pid if self.process else self._state().get("pid")
        if isinstance(pid, int):
            terminate(pid, self.process, grace=15)
        self.process = None
        (self.directory / "state.json").unlink(missing_ok=True)

    # -- hooks: what helm's hook Pods and Jobs would run, as host processes ------------------

    def render(self) -> list[dict[str, Any]]:
        """The release's manifests as `helm template` renders them, hooks and tests included."""
        args = self.helm_args("template")
        args.remove("--create-namespace")
        post = args.index("--post-renderer")
        del args[post:post + 2]
        return [doc for doc in yaml.safe_load_all(run(args, env=self._env())) if isinstance(doc, dict)]

    def run_hook(self, hook: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the chart's `hook` (`test`, `pre-delete`) container command on this host.

        No kubelet runs the hook's Pod or Job here, so: apply the hook's own ServiceAccount and
        RBAC objects from the chart (if they are hooks too), take a token of that ServiceAccount, run the container's
        exact command and arguments with `--kubeconfig` added, then delete the hook objects.
        """
        hook_docs = [doc for doc in self.render()
                     if hook in str((doc.get("metadata", {}).get("annotations") or {}).get("helm.sh/hook", ""))
                     .split(",")]
        workloads = [doc for doc in hook_docs if doc.get("kind") in ("Pod", "Job")]
        if len(workloads) != 1:
            raise AddonError(f"expected one Pod or Job for hook {hook!r}, the chart renders {len(workloads)}")
        support = [doc for doc in hook_docs if doc is not workloads[0]]
        pod_spec = workloads[0]["spec"] if workloads[0]["kind"] == "Pod" else workloads[0]["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        argv = [*container.get("command", []), *container.get("args", [])]
        kubectl = str(tools.bin_dir() / "kubectl")
        manifest = yaml.safe_dump_all(support)
        if support:  # a hook's own ServiceAccount and RBAC (the test's are release objects)
            run([kubectl, "apply", "-f", "-"], env=self._env(), input_text=manifest)
        try:
            kubeconfig = self.service_account_kubeconfig(pod_spec["serviceAccountName"], f"hook-{hook}")
            return subprocess.run([str(VENV / "bin" / argv[0]), *argv[1:], f"--kubeconfig={kubeconfig}"],
                                  capture_output=True, text=True, env=self._env(), timeout=timeout)
        finally:
            if support:
                run([kubectl, "delete", "--ignore-not-found", "--wait=false", "-f", "-"], env=self._env(),
                    input_text=manifest)

    def cleanup_and_uninstall(self, timeout: float = 180) -> None:
        """What `helm uninstall` does on a real cluster: the pre-delete hook, then the release.

        The hook's `tcr-assistant cleanup` runs here as a host process with the hook's own
        ServiceAccount while the controller still runs, so the controller removes what it created.
        """
        result = self.run_hook("pre-delete", timeout=timeout)
        if result.returncode != 0:
            raise AddonError(f"the pre-delete hook's cleanup failed ({result.returncode}):\n{result.stderr}")
        run([str(tools.helm_path()), "uninstall", self.release, "-n", self.namespace, "--no-hooks"],
            env=self._env())

    # -- state for `scripts/addon down` ------------------------------------------------------

    def _write_state(self) -> None:
        state = {"pid": self.process.pid if self.process else None, "release": self.release,
                 "namespace": self.namespace, "health_port": self.health_port, "webhook_port": self.webhook_port,
                 "metrics_port": self.metrics_port}
        (self.directory / "state.json").write_text(json.dumps(state, indent=2))

    def _state(self) -> dict[str, object]:
        path = self.directory / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class NodeRelease:
    """The chart on a cluster with a real node: locally built images, real Pods, real hooks.

    `install()` builds the images (cached), loads them into the node and runs
    `helm upgrade --install --wait`; `uninstall()` is a real `helm uninstall` (the pre-delete Job
    runs as a Job on the node).
    """

    cluster: NodeCluster
    values_files: list[Path] = field(default_factory=list)
    set_values: list[str] = field(default_factory=list)
    release: str = RELEASE
    namespace: str = NAMESPACE
    timeout: str = "5m"
    chart: Path = CHART_DIR  # a directory or an archive (releases/0.1.0/tcr-addon-0.1.0.tgz: harness.previous)

    def _env(self) -> dict[str, str]:
        return tool_env(self.cluster.kubeconfig)

    def helm(self, *args: str, timeout: float = 600) -> str:
        return run([str(tools.helm_path()), *args], env=self._env(), timeout=timeout)

    @staticmethod
    def image_values(built: Sequence[images.BuiltImage]) -> list[str]:
        """`--set` values that point the chart at the locally built images (never pulled)."""
        values = []
        for image, key in zip(built, ("controller", "hostsUpdater"), strict=True):
            values += [f"{key}.image.registry={image.registry}", f"{key}.image.repository={image.repository}",
                       f"{key}.image.tag={image.tag}", f"{key}.image.pullPolicy=Never"]
        return values

    def _values_args(self) -> list[str]:
        """Build and load the images (cached); the values that point the chart at them, then ours."""
        built = images.build_images()
        self.cluster.import_images(built)
        args = []
        for values in self.values_files:
            args += ["-f", str(values)]
        for assignment in [*self.image_values(built), *self.set_values]:
            args += ["--set", assignment]
        return args

    def install(self) -> None:
        """Build and load the images, then `helm upgrade --install --wait`; the same call upgrades."""
        self.helm("upgrade", "--install", self.release, str(self.chart), "-n", self.namespace, "--create-namespace",
                  "--wait", "--timeout", self.timeout, *self._values_args())

    def render(self) -> str:
        """What a GitOps tool applies: `helm template` with the CRD, without hooks and tests."""
        return self.helm("template", self.release, str(self.chart), "-n", self.namespace, "--include-crds",
                         "--no-hooks", "--skip-tests", *self._values_args())

    def test(self) -> str:
        """`helm test --logs`: the test Pod runs on the node; its log comes back."""
        return self.helm("test", self.release, "-n", self.namespace, "--logs", "--timeout", self.timeout)

    def uninstall(self) -> None:
        self.helm("uninstall", self.release, "-n", self.namespace, "--wait", "--timeout", self.timeout)


@contextlib.contextmanager
def running(plane: ControlPlane, directory: Path, values_files: list[Path] | None = None,
            set_values: list[str] | None = None, extra_args: list[str] | None = None) -> Iterator[Addon]:
    """Chart installed and controller ready for the duration of a `with` block."""
    addon = Addon(plane, directory, values_files or [], set_values or [], tie_to_parent=True,
                  extra_args=extra_args or [])
    addon.install()
    try:
        addon.start_controller()
        yield addon
    finally:
        addon.stop_controller()


def main(argv: list[str] | None = None) -> int:
    # --helm is accepted before and after the subcommand (`--helm 4 up` and `up --helm 4`).
    helm_option = argparse.ArgumentParser(add_help=False)
    helm_option.add_argument("--helm", choices=sorted(tools.HELM_RELEASES), default=argparse.SUPPRESS,
                             help="the Helm major that installs, upgrades and uninstalls "
                             f"({', '.join(f'{m}: {v}' for m, v in tools.HELM_RELEASES.items())}; "
                             f"default: $TCR_ADDON_HELM, else {tools.HELM_DEFAULT_MAJOR})")
    parser = argparse.ArgumentParser(
        prog="scripts/addon", parents=[helm_option],
        description="Install the chart on a local cluster ('scripts/cluster up'). On a control plane without a "
        "node, the controller and webhook run as a host process with a token of the chart's own ServiceAccount. "
        "On a cluster with a node ('scripts/cluster --node up'), the images are built and loaded into the node "
        "and the chart is installed with 'helm install --wait': everything runs as Pods.",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"add-on state and logs (default: {DEFAULT_DIR})")
    parser.add_argument("--cluster-dir", type=Path, default=DEFAULT_CLUSTER_DIR,
                        help=f"the control plane's --dir (default: {DEFAULT_CLUSTER_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[helm_option], help="helm-install the chart; return once tcr-assistant is ready")
    up.add_argument("-f", "--values", action="append", type=Path, default=[], help="a values file (repeatable)")
    up.add_argument("--set", action="append", default=[], dest="set_values", help="a helm --set value (repeatable)")
    down = sub.add_parser("down", parents=[helm_option],
                          help="stop the host-process tcr-assistant (the release stays unless --uninstall)")
    down.add_argument("--uninstall", action="store_true",
                      help="also uninstall, so nothing of the add-on is left: a real 'helm uninstall' on a node "
                      "(pre-delete Job included), else the cleanup hook's command and 'helm uninstall'")
    args = parser.parse_args(argv)
    if getattr(args, "helm", None):  # every helm call of this process, post-renderer included
        os.environ["TCR_ADDON_HELM"] = args.helm
    try:
        plane = plane_class(args.cluster_dir).attach(args.cluster_dir)
        if isinstance(plane, NodeCluster):
            return node_main(args, plane)
        if args.command == "up":
            if (args.dir / "state.json").exists():
                raise AddonError(f"tcr-assistant already runs from {args.dir}: 'scripts/addon down' first")
            shutil.rmtree(args.dir / "webhook-certs", ignore_errors=True)
            addon = Addon(plane, args.dir, [v.resolve() for v in args.values], args.set_values)
            started = time.monotonic()
            addon.install()
            addon.start_controller()
            print(f"tcr-addon installed with helm {tools.HELM_RELEASES[tools.helm_major()]} "
                  f"(Kubernetes {tools.kubernetes_release(plane.kubernetes)}) and tcr-assistant ready in "
                  f"{time.monotonic() - started:.1f} s "
                  f"(pid {addon.process.pid if addon.process else '?'})")
            print(f"health: {addon.health_url}/readyz  metrics: {addon.metrics_url}")
            print(f"log: {args.dir / 'controller.log'}")
        else:
            addon = Addon(plane, args.dir)
            state = addon._state()
            addon.release = str(state.get("release", RELEASE))
            addon.namespace = str(state.get("namespace", NAMESPACE))
            if args.uninstall:
                addon.cleanup_and_uninstall()
            addon.stop_controller()
            print("tcr-assistant stopped" + (" and tcr-addon uninstalled" if args.uninstall else ""))
    except (AddonError, ClusterError) as error:
        print(f"scripts/addon: error: {error}", file=sys.stderr)
        return 1
    return 0


def node_main(args: argparse.Namespace, cluster: NodeCluster) -> int:
    release = NodeRelease(cluster)
    started = time.monotonic()
    if args.command == "up":
        release.values_files = [v.resolve() for v in args.values]
        release.set_values = args.set_values
        release.install()
        print(f"tcr-addon installed with helm {tools.HELM_RELEASES[tools.helm_major()]} --wait on node "
              f"{cluster.node_name} (Kubernetes {tools.kubernetes_release(cluster.kubernetes)}) "
              f"in {time.monotonic() - started:.1f} s")
        print(f"pods: kubectl -n {NAMESPACE} get pods   logs: kubectl -n {NAMESPACE} logs "
              "deploy/tcr-assistant-controller-manager")
    elif args.uninstall:
        release.uninstall()
        print("tcr-addon uninstalled (helm uninstall, pre-delete Job on the node) "
              f"in {time.monotonic() - started:.1f} s")
    else:
        print("tcr-assistant runs as a Pod on the node: 'scripts/addon down --uninstall' removes the release")
    return 0
