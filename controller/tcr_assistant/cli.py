"""``tcr-assistant``: run the controller, or check/clean up for the chart's helm hooks."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tcr_assistant.hooks import check, cleanup
from tcr_assistant.k8s.client import KubeError
from tcr_assistant.k8s.connections import ServerLimits
from tcr_assistant.reconciler.options import DEFAULTS, DRIFT_MODES, WATCH_READ_MARGIN
from tcr_assistant.spec import api

log = logging.getLogger("tcr_assistant")

SERVER_DEFAULTS = ServerLimits()
#: Seconds the webhook's reviews in progress get at shutdown to be answered (the Pod's preStop sleep
#: has let kube-proxy take it out of the Service before).
DEFAULT_WEBHOOK_DRAIN = 5.0


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
        "--webhook-drain",
        type=float,
        default=DEFAULT_WEBHOOK_DRAIN,
        metavar="S",
        help="on shutdown the webhook stops accepting, closes its idle connections and gives the reviews "
        "in progress up to S seconds to be answered (each answer closes its connection), so that a review "
        "the API server has already sent is answered, not cut; 0 = cut them at once "
        f"(default: {DEFAULT_WEBHOOK_DRAIN:g})",
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
        "--drift-check-on-pod",
        type=float,
        default=DEFAULTS.pod_check_interval,
        metavar="S",
        help="poll mode, with the Pod webhook: when a Pod is admitted in a served namespace, read our "
        "Secrets there at once (at most once per S seconds per namespace; the admission never waits "
        "for it), so one deleted by hand is back before the kubelet pulls; 0 = off "
        f"(default: {DEFAULTS.pod_check_interval:g})",
    )
    run.add_argument(
        "--registry-check",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.registry_check,
        help="ask each registry whether it accepts its ImagePullSecret's credential (GET /v2/ as docker "
        "login does) and show the answer as the CredentialsAccepted condition; off for registries the "
        "controller cannot reach (default: on)",
    )
    run.add_argument(
        "--registry-check-period",
        type=float,
        default=DEFAULTS.registry_check_period,
        metavar="S",
        help="ask again this often while the credential is unchanged (sooner, backing off from 30 s, "
        f"while it is refused or the registry unreachable) (default: {DEFAULTS.registry_check_period:g})",
    )
    run.add_argument(
        "--registry-address",
        action="append",
        default=[],
        metavar="NAME=IP",
        help="reach registry NAME at IP, as the nodes' hosts entries do (repeatable; the chart passes "
        "global.hosts while hosts-updater writes them); other names resolve through DNS",
    )
    run.add_argument(
        "--registry-ca-file",
        metavar="PATH",
        help="CA certificates (PEM) the registries' certificates are checked against, instead of the "
        "system's",
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
    from tcr_assistant.app import build

    try:
        app = build(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    code = app.run()
    log.info("tcr-assistant stopped (exit %d)", code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    handlers = {"run": cmd_run, "check": check.run, "cleanup": cleanup.run}
    try:
        return handlers[args.command](args)
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
