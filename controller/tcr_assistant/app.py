"""The composition root of `tcr-assistant run`: builds every part of the process from the command
line, as a typed list, and hands them to `k8s.app.App`, which starts them in order and stops
them in reverse. The controller's own loop (caches, leadership, workers) is the main loop."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
from pathlib import Path
from types import FrameType

from tcr_assistant.admission.credentials import CredentialLookup
from tcr_assistant.admission.server import Review, WebhookServer
from tcr_assistant.k8s.app import App, Part
from tcr_assistant.k8s.client import connect
from tcr_assistant.k8s.connections import ServerLimits
from tcr_assistant.k8s.httpserver import BoundedServer, parse_bind
from tcr_assistant.reconciler import credcheck
from tcr_assistant.reconciler.controller import Controller
from tcr_assistant.reconciler.metrics import health_routes, metrics_routes
from tcr_assistant.reconciler.options import WATCH_READ_MARGIN, Options, default_namespace, user_agent
from tcr_assistant.spec import api

log = logging.getLogger(__name__)

#: The 404 message of the Pod route when the Pod webhook is off: a caller learns why, and what turns it on.
POD_WEBHOOK_OFF = (
    "the Pod webhook is switched off here (chart value podWebhook.enabled=false, or tcr-assistant run "
    "without --pod-webhook): this server does not serve " + api.POD_WEBHOOK_PATH
)


def pod_webhook_enabled(args: argparse.Namespace) -> bool:
    """--pod-webhook / --no-pod-webhook, else on exactly when the Pod webhook's configuration is kept."""
    if args.pod_webhook is not None:
        return bool(args.pod_webhook)
    return bool(args.mutating_webhook_configuration)


def server_limits(args: argparse.Namespace) -> ServerLimits:
    """The limits of every server from the --server-* flags; ValueError names the flag that is wrong."""
    flags = {
        "--server-request-timeout": args.server_request_timeout,
        "--server-max-connections": args.server_max_connections,
        "--server-max-connections-per-client": args.server_max_connections_per_client,
    }
    for flag, value in flags.items():
        if not value > 0:
            raise ValueError(f"{flag} must be positive, got {value:g}")
    if args.server_max_connections_per_client > args.server_max_connections:
        raise ValueError(
            f"--server-max-connections-per-client ({args.server_max_connections_per_client}) must not exceed "
            f"--server-max-connections ({args.server_max_connections}): lower the one or raise the other"
        )
    return ServerLimits(
        request_timeout=args.server_request_timeout,
        max_connections=args.server_max_connections,
        max_connections_per_client=args.server_max_connections_per_client,
    )


def parse_registry_addresses(values: list[str]) -> dict[str, str]:
    """``--registry-address NAME=IP`` values -> {NAME: IP}; ValueError names the bad one."""
    addresses: dict[str, str] = {}
    for value in values:
        name, sep, ip = value.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            ipaddress.ip_address(ip.strip())
        except ValueError:
            raise ValueError(f"--registry-address {value!r}: give NAME=IP, e.g. demo.tencentcloudcr.com=10.0.0.12") \
                from None
        addresses[name.strip()] = ip.strip()
    return addresses


def build(args: argparse.Namespace) -> App:
    """Every part of `tcr-assistant run`; ValueError names a flag that is wrong."""
    namespace = args.namespace or default_namespace()
    if not namespace:
        raise ValueError("--namespace not given and neither $POD_NAMESPACE nor the in-cluster namespace file is set")
    limits = server_limits(args)
    if not args.webhook_drain >= 0:
        raise ValueError(f"--webhook-drain must be 0 or more, got {args.webhook_drain:g}")
    if not args.drift_check_on_pod >= 0:
        raise ValueError(f"--drift-check-on-pod must be 0 or more, got {args.drift_check_on_pod:g}")
    if not args.registry_check_period >= credcheck.MIN_INTERVAL:
        raise ValueError(f"--registry-check-period must be {credcheck.MIN_INTERVAL:g} or more, "
                         f"got {args.registry_check_period:g}")
    registry_addresses = parse_registry_addresses(args.registry_address)
    kube = connect(args.kubeconfig, pool_size=args.workers + 12, user_agent=user_agent())
    controller = Controller(kube, Options(
        namespace=namespace,
        workers=args.workers,
        drift_mode=args.drift_mode,
        drift_period=args.drift_check_period,
        pod_check_interval=args.drift_check_on_pod,
        registry_check=args.registry_check,
        registry_check_period=args.registry_check_period,
        registry_addresses=registry_addresses,
        registry_ca_file=args.registry_ca_file,
        watch_timeout=args.watch_timeout,
        read_timeout=args.watch_timeout + WATCH_READ_MARGIN,
        leader_elect=args.leader_elect,
        lease_name=args.lease_name,
    ))
    manager, metrics = controller.manager, controller.metrics
    parts: list[Part] = []
    checks = {"caches synced": manager.synced}
    keeper_part: Part | None = None
    if args.webhook_port and args.webhook_cert_secret:
        from tcr_assistant.servingcert.decision import CertSettings, service_names
        from tcr_assistant.servingcert.keeper import ServingCertKeeper

        keeper = ServingCertKeeper(kube, CertSettings(
            namespace=namespace,
            secret=args.webhook_cert_secret,
            webhook_configuration=args.webhook_configuration,
            names=[*service_names(args.webhook_service, namespace), *args.webhook_cert_name],
            validity=args.webhook_cert_validity,
            cert_dir=Path(args.webhook_cert_dir),
            mutating_configuration=args.mutating_webhook_configuration,
            existing=args.webhook_cert_existing,
        ), manager.stop_event, watch_timeout=args.watch_timeout, read_timeout=args.watch_timeout + WATCH_READ_MARGIN)
        checks["webhook certificate published"] = keeper.ready
        keeper_part = Part("webhook certificate keeper", keeper.start, keeper.stop)
    for name, addr, pages in (
        ("health", args.health_probe_bind_address, health_routes(checks)),
        ("metrics", args.metrics_bind_address, metrics_routes(metrics, lambda: len(controller.queue))),
    ):
        bind = parse_bind(addr)
        if bind is not None:
            server = BoundedServer(*bind, name=name, limits=limits, pages=pages,
                                   on_drop=metrics.connection_dropped(name))
            parts.append(Part(f"{name} server", server.start, server.stop))
    if args.webhook_port:
        routes: dict[str, Review] = {
            api.WEBHOOK_PATH: CredentialLookup(kube, controller.state, namespace).review}
        if pod_webhook_enabled(args):
            from tcr_assistant.admission.pods import PodWebhook

            pods = PodWebhook(controller.state, kube, on_served=controller.check_on_admission)
            routes[api.POD_WEBHOOK_PATH] = pods.handle
            parts.append(Part("Pod webhook", lambda: None, pods.stop))
        webhook = WebhookServer(
            args.webhook_host, args.webhook_port, Path(args.webhook_cert_dir), limits=limits, routes=routes,
            switched_off={api.POD_WEBHOOK_PATH: POD_WEBHOOK_OFF}, on_drop=metrics.connection_dropped("webhook"),
            drain=args.webhook_drain,
        )
        parts.append(Part("webhook server", webhook.start, webhook.stop))
    if keeper_part is not None:
        parts.append(keeper_part)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        manager.stop()

    def handle_signals() -> None:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    parts.append(Part("signal handlers", handle_signals, lambda: None))
    log.info("tcr-assistant starting (namespace %s, leader election %s)", namespace,
             "on" if args.leader_elect else "off")
    return App(parts, manager.run)
