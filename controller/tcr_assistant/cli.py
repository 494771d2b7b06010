"""``tcr-assistant``: run the controller, or check/clean up for the chart's helm hooks."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from . import api, writes
from .hosts_cleanup import remove_hosts_lines
from .kube import SERVICEACCOUNTS, Kube, KubeError, connect
from .options import DEFAULTS, DRIFT_MODES, WATCH_READ_MARGIN, user_agent
from .runtime.connections import ServerLimits

log = logging.getLogger("tcr_assistant")

SERVER_DEFAULTS = ServerLimits()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info); secret values are never logged",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcr-assistant",
        description="TCR Assistant: distributes registry pull Secrets (tcr.ips<name>) from ImagePullSecret "
        "objects into namespaces and links them to ServiceAccounts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the controller (and the validating webhook)",
        description="Run the controller: watch ImagePullSecrets, Namespaces and ServiceAccounts; "
        "keep a Secret tcr.ips<name> in every matching namespace and list it in "
        "imagePullSecrets of every matching ServiceAccount.",
    )
    _common(run)
    run.add_argument(
        "--namespace",
        metavar="NS",
        help="the add-on's own namespace (holds the leader-election Lease and passwordSecretRef "
        "Secrets; default: $POD_NAMESPACE, else the in-cluster namespace file)",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="use Lease leader election so only one replica acts (lease "
        f"{DEFAULTS.lease_duration:g}s, renew {DEFAULTS.renew_deadline:g}s, retry {DEFAULTS.retry_period:g}s)",
    )
    run.add_argument(
        "--lease-name",
        default=DEFAULTS.lease_name,
        metavar="NAME",
        help=f"name of the leader-election Lease (default: {DEFAULTS.lease_name})",
    )
    run.add_argument(
        "--health-probe-bind-address",
        default=api.DEFAULT_HEALTH_ADDR,
        metavar="HOST:PORT",
        help="serve /healthz and /readyz (ready = caches synced and, with --webhook-cert-secret, the certificate "
        "published) here; 0 = off (default: :8081)",
    )
    run.add_argument(
        "--metrics-bind-address",
        default=api.DEFAULT_METRICS_ADDR,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here; 0 = off (default: :8080)",
    )
    run.add_argument(
        "--webhook-port",
        type=int,
        default=api.DEFAULT_WEBHOOK_PORT,
        metavar="PORT",
        help="HTTPS port of the validating webhook; 0 = off (default: 9443)",
    )
    run.add_argument(
        "--webhook-host", default="", metavar="HOST", help="address the webhook listens on (default: all interfaces)"
    )
    run.add_argument(
        "--pod-webhook",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"serve the Pod webhook's route {api.POD_WEBHOOK_PATH} on the webhook port; when off the route "
        "answers 404 (default: on when --mutating-webhook-configuration is given, else off)",
    )
    run.add_argument(
        "--server-request-timeout",
        type=float,
        default=SERVER_DEFAULTS.request_timeout,
        metavar="S",
        help="webhook, health and metrics servers: a request (TLS handshake, request line, headers, body and "
        "answer) must be done within S seconds, or its connection is closed "
        f"(default: {SERVER_DEFAULTS.request_timeout:g})",
    )
    run.add_argument(
        "--server-max-connections",
        type=int,
        default=SERVER_DEFAULTS.max_connections,
        metavar="N",
        help="each of those servers keeps at most N connections open; when all are taken, a client address "
        "holding fewer than the busiest address takes that address's oldest connection, else the new one "
        f"is closed (default: {SERVER_DEFAULTS.max_connections})",
    )
    run.add_argument(
        "--server-max-connections-per-client",
        type=int,
        default=SERVER_DEFAULTS.max_connections_per_client,
        metavar="N",
        help="each of those servers keeps at most N connections open from one client address; more are "
        f"closed at once (default: {SERVER_DEFAULTS.max_connections_per_client})",
    )
    run.add_argument(
        "--webhook-cert-dir",
        default=api.DEFAULT_WEBHOOK_CERT_DIR,
        metavar="DIR",
        help=f"directory with tls.crt and tls.key, reloaded when they change (default: {api.DEFAULT_WEBHOOK_CERT_DIR})",
    )
    run.add_argument(
        "--webhook-cert-secret",
        metavar="NAME",
        help="keep the webhook's serving certificate in this kubernetes.io/tls Secret of --namespace: create "
        "the CA and certificate, renew both at two thirds of their lifetime, publish the CA as the caBundle of "
        "--webhook-configuration and write tls.crt/tls.key into --webhook-cert-dir (default: off; the files "
        "then come from elsewhere, e.g. cert-manager). A Secret of that name that tcr-assistant did not create "
        "is refused (neither served nor published nor changed) unless --webhook-cert-existing is given",
    )
    run.add_argument(
        "--webhook-cert-existing",
        action="store_true",
        help="--webhook-cert-secret is a Secret you provide (chart value webhook.existingCertSecret) with tls.crt, "
        "tls.key and ca.crt: serve it and publish its ca.crt as the caBundle as it is; never write it",
    )
    run.add_argument(
        "--webhook-configuration",
        default=api.WEBHOOK_CONFIGURATION,
        metavar="NAME",
        help=f"ValidatingWebhookConfiguration whose caBundle is kept (default: {api.WEBHOOK_CONFIGURATION})",
    )
    run.add_argument(
        "--mutating-webhook-configuration",
        metavar="NAME",
        help="the Pod webhook's MutatingWebhookConfiguration, whose caBundle is kept too (default: none)",
    )
    run.add_argument(
        "--webhook-service",
        default=api.WEBHOOK_SERVICE,
        metavar="NAME",
        help=f"Service in --namespace that the certificate is issued for (default: {api.WEBHOOK_SERVICE})",
    )
    run.add_argument(
        "--webhook-cert-name",
        action="append",
        default=[],
        metavar="DNS",
        help="an extra DNS name in the certificate, e.g. localhost for a webhook reached by URL (repeatable)",
    )
    run.add_argument(
        "--webhook-cert-validity",
        type=float,
        default=api.WEBHOOK_CERT_VALIDITY,
        metavar="S",
        help=f"lifetime of each CA and serving certificate in seconds (default: {api.WEBHOOK_CERT_VALIDITY:g}, "
        "365 days)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=DEFAULTS.workers,
        metavar="N",
        help=f"concurrent reconcile workers; they mostly wait on the API server (default: {DEFAULTS.workers})",
    )
    run.add_argument(
        "--drift-mode",
        choices=DRIFT_MODES,
        default=DEFAULTS.drift_mode,
        help="how hand edits and deletions of distributed Secrets are found: poll = GET each by name "
        "once per --drift-check-period (no cluster-wide Secret access); watch = watch Secrets with our "
        "label (no idle requests, repair within a second; needs list/watch on Secrets in every "
        f"namespace) (default: {DEFAULTS.drift_mode})",
    )
    run.add_argument(
        "--drift-check-period",
        type=float,
        default=DEFAULTS.drift_period,
        metavar="S",
        help="poll mode: check each distributed Secret once every S seconds, spread evenly; this sets "
        "both the idle cost (N/S GETs per second for N Secrets) and the longest repair delay "
        f"(default: {DEFAULTS.drift_period:g})",
    )
    run.add_argument(
        "--watch-timeout",
        type=int,
        default=DEFAULTS.watch_timeout,
        metavar="S",
        help=f"server-side watch timeout; the client read timeout is this plus {WATCH_READ_MARGIN:g}s "
        f"(default: {DEFAULTS.watch_timeout})",
    )

    check = sub.add_parser(
        "check",
        help="verify that a namespace's ServiceAccount is set up (helm test)",
        description="Exit 0 once, for each NAME, Secret tcr.ips<NAME> exists in the namespace "
        "(type kubernetes.io/dockerconfigjson) and the ServiceAccount lists it in "
        "imagePullSecrets; else exit 1 with what is missing after --timeout.",
    )
    _common(check)
    check.add_argument("--namespace", required=True, metavar="NS", help="namespace to check")
    check.add_argument(
        "--service-account", default="default", metavar="NAME", help="ServiceAccount to check (default: default)"
    )
    check.add_argument("--timeout", type=float, default=60.0, metavar="S", help="wait up to S seconds (default: 60)")
    check.add_argument("names", nargs="+", metavar="NAME", help="ImagePullSecret names")

    cleanup = sub.add_parser(
        "cleanup",
        help="delete ImagePullSecrets and wait for their cleanup (pre-delete hook)",
        description="Delete every ImagePullSecret matching --selector and wait until they are "
        "gone, i.e. the controller's finalizer has removed their Secrets and "
        "ServiceAccount entries. Exit 1 if some remain after --timeout.",
    )
    _common(cleanup)
    cleanup.add_argument(
        "--selector",
        required=True,
        metavar="LABELSELECTOR",
        help="label selector of the ImagePullSecrets to delete, e.g. app.kubernetes.io/instance=x",
    )
    cleanup.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="wait up to S seconds in all (default: 120)"
    )
    cleanup.add_argument(
        "--hosts-daemonset",
        metavar="NS/NAME",
        help="first switch this hosts-updater DaemonSet to --remove mode and wait (up to half of --timeout) until "
        "every node's Pod is Ready again, i.e. its hosts file no longer holds our lines; a timeout is reported, "
        "not fatal, so the uninstall goes on",
    )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)


# -- run ------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .app import build

    try:
        app = build(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    code = app.run()
    log.info("tcr-assistant stopped (exit %d)", code)
    return code


# -- check ----------------------------------------------------------------------------------------


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


def cmd_check(args: argparse.Namespace) -> int:
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


# -- cleanup --------------------------------------------------------------------------------------


def cmd_cleanup(args: argparse.Namespace) -> int:
    started = time.monotonic()
    kube = connect(args.kubeconfig, user_agent=user_agent())
    if args.hosts_daemonset:
        namespace, _, name = args.hosts_daemonset.partition("/")
        if not namespace or not name:
            print(f"error: --hosts-daemonset must be NS/NAME, got {args.hosts_daemonset!r}", file=sys.stderr)
            return 2
        # At most half of the overall --timeout, so the ImagePullSecret cleanup keeps its share.
        remove_hosts_lines(kube, namespace, name, args.timeout / 2, say=print)
    path = writes.IMAGEPULLSECRETS.path()
    try:
        items = kube.list_all(path, {"labelSelector": args.selector})["items"]
    except KubeError as exc:
        if exc.not_found:  # CRD already gone
            print("no ImagePullSecret resource type; nothing to clean up")
            return 0
        raise
    names = [i["metadata"]["name"] for i in items]
    for name in names:
        kube.delete(writes.IMAGEPULLSECRETS.path(name=name))
        print(f"deleting ImagePullSecret {name}")
    deadline = started + args.timeout
    remaining = list(names)
    while remaining and time.monotonic() < deadline:
        remaining = [n for n in remaining if kube.get(writes.IMAGEPULLSECRETS.path(name=n)) is not None]
        if remaining:
            time.sleep(0.5)
    if remaining:
        print(
            f"FAIL: still present after {args.timeout:.0f}s (is the controller running?): " + ", ".join(remaining),
            file=sys.stderr,
        )
        return 1
    print(f"cleaned up {len(names)} ImagePullSecret(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    handlers = {"run": cmd_run, "check": cmd_check, "cleanup": cmd_cleanup}
    try:
        return handlers[args.command](args)
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
