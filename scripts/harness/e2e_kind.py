"""`make e2e-kind`: the e2e suite and `helm test` on a real kind cluster (machines with Docker only).

Not exercised in CI: this project's CI machine has no Docker engine. Steps: create a kind
cluster, build both images, `kind load` them, run the e2e suite in cluster mode (it installs the
chart with `helm install --wait` from values the wizard wrote, with hooks), run `helm test` on a
fresh install, delete the cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from harness import REPO_ROOT, VENV, tools

IMAGE_TAG = "e2e"
IMAGES = {
    "controller": ("tcr-addon/tcr-assistant", REPO_ROOT / "controller"),
    "hostsUpdater": ("tcr-addon/hosts-updater", REPO_ROOT / "hosts-updater"),
}


def step(message: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    print(f"[e2e-kind] {message}: {' '.join(argv)}", flush=True)
    subprocess.run(argv, check=True, env=env)


def image_values() -> list[str]:
    values: list[str] = []
    for key, (repository, _) in IMAGES.items():
        values += [f"--set={key}.image.registry=localhost", f"--set={key}.image.repository={repository}",
                   f"--set={key}.image.tag={IMAGE_TAG}", f"--set={key}.image.pullPolicy=Never"]
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make e2e-kind", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cluster-name", default="tcr-addon-e2e")
    parser.add_argument("--keep", action="store_true", help="keep the kind cluster afterwards")
    args = parser.parse_args(argv)
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        print("make e2e-kind: needs a running Docker engine (this is expected on the CI machine, which has none)",
              file=sys.stderr)
        return 2
    kind, helm = str(tools.bin_dir() / "kind"), str(tools.helm_path())
    kubeconfig = REPO_ROOT / ".local" / "kind.kubeconfig"
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KUBECONFIG=str(kubeconfig),
               PATH=os.pathsep.join([*map(str, tools.path_dirs()), os.environ["PATH"]]))
    step("create cluster", [kind, "create", "cluster", "--name", args.cluster_name, "--kubeconfig", str(kubeconfig),
                            "--wait", "120s"])
    try:
        for repository, context in IMAGES.values():
            image = f"localhost/{repository}:{IMAGE_TAG}"
            step("build image", ["docker", "build", "-t", image, str(context)])
            step("load image", [kind, "load", "docker-image", image, "--name", args.cluster_name])
        env["TCR_E2E_MODE"] = "cluster"
        env["TCR_E2E_HELM_ARGS"] = " ".join(image_values())
        step("e2e suite", [str(VENV / "bin" / "python"), "-m", "pytest", "tests/e2e", "-v"], env=env)
        step("install for helm test", [helm, "install", "tcr-addon", str(REPO_ROOT / "chart"), "-n",
                                       "tcr-assistant-system", "--create-namespace", "--wait", "--timeout", "5m",
                                       "-f", str(REPO_ROOT / "tests" / "e2e" / "kind-values.yaml"), *image_values()],
             env=env)
        step("helm test", [helm, "test", "tcr-addon", "-n", "tcr-assistant-system", "--logs"], env=env)
        step("uninstall", [helm, "uninstall", "tcr-addon", "-n", "tcr-assistant-system", "--wait"], env=env)
    finally:
        if not args.keep:
            step("delete cluster", [kind, "delete", "cluster", "--name", args.cluster_name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
