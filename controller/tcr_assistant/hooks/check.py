"""`tcr-assistant check` (the chart's `helm test`): a ServiceAccount lists our Secrets and they exist."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from tcr_assistant.k8s.client import SERVICEACCOUNTS, Kube, KubeError, connect
from tcr_assistant.reconciler.options import user_agent
from tcr_assistant.spec import api


def check_problems(kube: Kube, namespace: str, service_account: str, names: Sequence[str]) -> list[str]:
    problems: list[str] = []
    sa = kube.get(SERVICEACCOUNTS.path(namespace, service_account))
    listed = {(e or {}).get("name") for e in (sa or {}).get("imagePullSecrets") or []}
    if sa is None:
        problems.append(f"ServiceAccount {namespace}/{service_account} does not exist")
    for name in names:
        secret = api.secret_name(name)
        obj = kube.get_secret(namespace, secret)
        if obj is None:
            problems.append(
                f"Secret {namespace}/{secret} does not exist (ImagePullSecret {name!r} does not "
                f"select namespace {namespace!r}, or the controller is not running)"
            )
        elif obj.get("type") != api.SECRET_TYPE or api.SECRET_KEY not in (obj.get("data") or {}):
            problems.append(f"Secret {namespace}/{secret} is not of type {api.SECRET_TYPE} with key {api.SECRET_KEY}")
        if sa is not None and secret not in listed:
            problems.append(f"ServiceAccount {namespace}/{service_account} does not list {secret} in imagePullSecrets")
    return problems


def run(args: argparse.Namespace) -> int:
    kube = connect(args.kubeconfig, user_agent=user_agent())
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            problems = check_problems(kube, args.namespace, args.service_account, args.names)
        except KubeError as exc:
            problems = [f"API error: {exc}"]
        if not problems:
            print(
                f"ok: ServiceAccount {args.namespace}/{args.service_account} lists "
                + ", ".join(api.secret_name(n) for n in args.names)
                + " and the Secrets exist"
            )
            return 0
        if time.monotonic() >= deadline:
            for p in problems:
                print(f"FAIL: {p}", file=sys.stderr)
            return 1
        time.sleep(1.0)
