"""The plan: the wizard's options turned into chart values, remembering which option each part came from.

Option combinations, region names, registry names (as TKE names them), hosts entries (``--host``,
``--private-ip``), the credentials (or, with ``--mint-in-cluster``, the ``dockerTokenFrom`` the
controller mints them from), the ``helm test`` namespace, and the values in the TKE add-on shape
that ``render`` writes and ``check`` checks.
"""

from __future__ import annotations

import argparse
import copy
import getpass
import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from values_wizard.errors import BadOption
from values_wizard.tcr_api import ENV_ENDPOINT, Endpoint, InternalEndpoint, TcrApiError

PLACEHOLDER_USER = "issued-user"
PLACEHOLDER_SECRET = "issued-token"  # stands in for the token while the options are checked
PLACEHOLDER_IP = "10.0.0.1"
TCR_SUFFIX = ".tencentcloudcr.com"

#: Tencent Cloud long region name -> the short name TKE writes into global.cluster.region.
REGIONS = {
    "ap-guangzhou": "gz",
    "ap-shanghai": "sh",
    "ap-beijing": "bj",
    "ap-chengdu": "cd",
    "ap-chongqing": "cq",
    "ap-nanjing": "nj",
    "ap-hongkong": "hk",
    "ap-singapore": "sg",
    "ap-tokyo": "jp",
    "ap-seoul": "kr",
    "ap-mumbai": "in",
    "ap-bangkok": "th",
    "ap-jakarta": "jkt",
    "na-siliconvalley": "usw",
    "na-ashburn": "use",
    "eu-frankfurt": "de",
    "sa-saopaulo": "sao",
    "ap-shanghai-fsi": "shjr",
    "ap-shenzhen-fsi": "szjr",
}
SHORT_REGIONS = {short: long for long, short in REGIONS.items()}
_LONG_REGION_RE = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
_INSTANCE_ID_RE = re.compile(r"tcr-[a-z0-9]+")


@dataclass
class Credentials:
    username: str | None  # None with token_from: the TCR API names the user with each token
    password: str | None = None
    secret_name: str | None = None
    secret_key: str | None = None
    password_option: str = "--password-stdin"
    username_option: str = "--username"
    token_from: dict[str, Any] | None = None  # dockerTokenFrom (--mint-in-cluster)


@dataclass
class HostEntry:
    domain: str
    ip: str
    option: str


@dataclass
class Plan:
    registries: list[tuple[str, str, str]]  # (name, domain, option that gave the name)
    namespaces: str
    service_accounts: str
    excluded: str | None
    region: str
    longregion: str
    namespace_selector: dict[str, Any] | None = None  # a LabelSelector, from --namespace-selector
    hosts: list[HostEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def strip_port(domain: str) -> str:
    host, sep, port = domain.rpartition(":")
    return host if sep and port.isdigit() else domain


def derive_name(domain: str, instance_id: str | None) -> str:
    host = strip_port(domain).lower()
    first = host.split(".", 1)[0]
    if instance_id:
        return f"{instance_id}-{'vpc' if first.endswith('-vpc') else 'public'}"
    if host.endswith(TCR_SUFFIX):
        return first
    return host


def resolve_region(value: str | None) -> tuple[str, str]:
    """(short, long) region names; ("", "") when not given."""
    if value is None:
        return "", ""
    if value in REGIONS:
        return REGIONS[value], value
    if value in SHORT_REGIONS:
        return value, SHORT_REGIONS[value]
    if _LONG_REGION_RE.fullmatch(value):
        return value, value
    raise BadOption(
        "--region", f"{value!r} is not a Tencent Cloud region: use e.g. ap-guangzhou (or its short form gz)"
    )


def parse_host(value: str) -> tuple[str, str]:
    domain, sep, ip = value.partition("=")
    if not sep or not domain or not ip:
        raise BadOption("--host", f"{value!r} must be DOMAIN=IP, e.g. demo-vpc.tencentcloudcr.com=10.0.0.10")
    return domain.strip(), ip.strip()


def check_ip(option: str, ip: str, what: str) -> None:
    from hosts_updater.config import refuse_ip

    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise BadOption(option, f"{what}: {ip!r} is not an IPv4 address") from None
    if address.version != 4 or str(address) != ip:
        raise BadOption(option, f"{what}: {ip!r} is not an IPv4 address in dotted form (e.g. 10.0.0.10)")
    reason = refuse_ip(address)
    if reason is not None:  # the rule hosts-updater applies on every node, and the chart's schema
        raise BadOption(option, f"{what}: {ip!r} {reason}: give the registry's private-network IP")


def check_host_domain(option: str, domain: str) -> None:
    from tcr_assistant.spec.validation import validate_server

    problem = validate_server(domain)
    if problem is not None:
        raise BadOption(option, f"domain {domain!r} {problem}")
    if ":" in domain:
        raise BadOption(option, f"domain {domain!r} must be a host name without ':port'")
    check_hosts_name(option, domain)


def check_hosts_name(option: str, domain: str, what: str = "domain") -> None:
    """The name rule hosts-updater applies on every node (and the chart's schema)."""
    from hosts_updater.config import refuse_domain

    reason = refuse_domain(domain.lower())
    if reason is not None:
        raise BadOption(option, f"{what} {domain!r} {reason}: hosts entries are for registry domains such as "
                        "<name>-vpc.tencentcloudcr.com")


def check_endpoint(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Plain ``http://`` would carry the answers (an issued token, the private IP) in clear and
    let anyone on the path forge them: only with ``--insecure-http-endpoint``."""
    uses_api = args.issue_token or args.private_ip == "auto"
    option = "--endpoint" if args.endpoint else ENV_ENDPOINT
    where = args.endpoint or env.get(ENV_ENDPOINT) or ""
    if not uses_api or args.insecure_http_endpoint or not where.strip().lower().startswith("http://"):
        return
    # --insecure-http-endpoint is refused with --mint-in-cluster: do not suggest it there.
    escape = "" if args.mint_in_cluster else ", or pass --insecure-http-endpoint for a local test endpoint"
    raise BadOption(
        option,
        f"{where!r} is plain http: the issued token and the private IP would cross the network in clear "
        f"and could be read or forged on the way; use https:// (the default when no scheme is given){escape}",
    )


def token_type(args: argparse.Namespace) -> str:
    """``--token-type``, else the mode's default: a long-term token for the values (``--issue-token``
    writes it once), a temporary one for the controller (``--mint-in-cluster`` renews it)."""
    if args.token_type is not None:
        return str(args.token_type)
    return "temp" if args.mint_in_cluster else "longterm"


def mint_endpoint(value: str | None) -> str | None:
    """``--endpoint`` as ``dockerTokenFrom``'s ``endpoint``: the bare host[:port] (the controller
    speaks HTTPS only, so an ``https://`` prefix is dropped and ``http://`` refused)."""
    if value is None:
        return None
    try:
        endpoint = Endpoint.parse(value)
    except ValueError as exc:
        raise BadOption("--endpoint", f"{value!r} {exc}") from None
    if endpoint.protocol != "https":
        raise BadOption(
            "--endpoint",
            f"{value!r} is plain http: with --mint-in-cluster the controller calls the TCR API over HTTPS "
            "only; give HOST[:PORT] (e.g. tcr.tencentcloudapi.com)",
        )
    return endpoint.host


def token_from(args: argparse.Namespace) -> dict[str, Any]:
    """``dockerTokenFrom`` for ``--mint-in-cluster`` (after :func:`check_combinations`)."""
    tcr: dict[str, Any] = {
        "instanceId": args.instance_id,
        "region": resolve_region(args.region)[1],  # the API wants the long form
        "tokenType": token_type(args),
    }
    endpoint = mint_endpoint(args.endpoint)
    if endpoint is not None:
        tcr["endpoint"] = endpoint
    if args.api_key_secret is not None:
        tcr["apiKeySecretRef"] = {"name": args.api_key_secret}
    else:
        tcr["webIdentity"] = {}
    return {"tcr": tcr}


def read_password(args: argparse.Namespace, stdin: IO[str]) -> str:
    if args.password_stdin:
        if stdin.isatty():
            data = getpass.getpass("Registry password (not echoed): ", stream=sys.stderr)
        else:
            data = stdin.read()
        option = "--password-stdin"
    else:
        option = "--password-file"
        try:
            data = Path(args.password_file).expanduser().read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BadOption(option, f"{args.password_file}: is not UTF-8 text") from None
        except OSError as exc:
            raise BadOption(option, f"cannot read {args.password_file}: {exc.strerror or exc}") from None
    if data.endswith("\n"):  # like docker login --password-stdin: one line ending, LF or CRLF
        data = data.removesuffix("\n").removesuffix("\r")
    if data == "":
        raise BadOption(option, "the password is empty")
    return data


def check_combinations(args: argparse.Namespace) -> None:
    if not args.registry:
        raise BadOption(
            "--registry", "at least one registry domain is required, e.g. --registry demo.tencentcloudcr.com"
        )
    if not (args.password_stdin or args.password_file or args.existing_secret or args.issue_token
            or args.mint_in_cluster):
        raise BadOption(
            "--password-stdin",
            "give the credentials: --username with --password-stdin, --password-file or --existing-secret, "
            "or --issue-token, or --mint-in-cluster",
        )
    if args.issue_token and args.username is not None:
        raise BadOption("--username", "not with --issue-token (the API returns the user name)")
    if args.mint_in_cluster:
        check_mint_combinations(args)
    else:
        for option, given in (("--api-key-secret", args.api_key_secret is not None),
                              ("--web-identity", args.web_identity)):
            if given:
                raise BadOption(option, "only goes with --mint-in-cluster (where the controller's TCR API "
                                "credentials come from)")
    if not (args.issue_token or args.mint_in_cluster) and not args.username:
        raise BadOption("--username", "is required with --password-stdin, --password-file and --existing-secret")
    if not (args.issue_token or args.mint_in_cluster) and args.token_type is not None:
        raise BadOption("--token-type", "only goes with --issue-token or --mint-in-cluster")
    if not args.issue_token and args.token_description != "tcr-addon":
        raise BadOption("--token-description", "only goes with --issue-token")
    needs_instance = [
        opt for opt, on in (("--issue-token", args.issue_token), ("--mint-in-cluster", args.mint_in_cluster),
                            ("--private-ip auto", args.private_ip == "auto")) if on
    ]
    for opt in needs_instance:
        if not args.instance_id:
            raise BadOption("--instance-id", f"is required with {opt}")
        if not args.region:
            raise BadOption("--region", f"is required with {opt}")
    if args.instance_id is not None and not _INSTANCE_ID_RE.fullmatch(args.instance_id):
        raise BadOption("--instance-id", f"{args.instance_id!r} is not a TCR instance id (tcr-xxxxxxxx)")
    if args.vpc_id and args.private_ip != "auto":
        raise BadOption("--vpc-id", "only goes with --private-ip auto")
    if args.name and len(args.name) != len(args.registry):
        raise BadOption(
            "--name", f"give one --name per --registry ({len(args.registry)} registries, {len(args.name)} names)"
        )


def check_mint_combinations(args: argparse.Namespace) -> None:
    """``--mint-in-cluster``: no user name, HTTPS only, exactly one source of the API credentials."""
    if args.username is not None:
        raise BadOption("--username", "not with --mint-in-cluster: the controller gets the user name from the "
                        "TCR API with each token, so the values hold none")
    if args.insecure_http_endpoint:
        raise BadOption("--insecure-http-endpoint", "not with --mint-in-cluster: the controller calls the TCR API "
                        "over HTTPS only")
    if args.api_key_secret is not None and args.web_identity:
        raise BadOption("--web-identity", "not with --api-key-secret: give exactly one source of the controller's "
                        "TCR API credentials")
    if args.api_key_secret is None and not args.web_identity:
        raise BadOption("--mint-in-cluster", "needs the controller's TCR API credentials: --api-key-secret NAME "
                        "(a Secret with secretId and secretKey in the add-on's namespace) or --web-identity "
                        "(the controller's TKE Pod identity)")


def make_plan(args: argparse.Namespace, private_ip: str | None) -> Plan:
    short, long = resolve_region(args.region)
    registries: list[tuple[str, str, str]] = []
    seen_domains: set[str] = set()
    names: dict[str, str] = {}
    for index, domain in enumerate(args.registry):
        if domain in seen_domains:
            raise BadOption("--registry", f"{domain!r} is given twice")
        seen_domains.add(domain)
        if args.name:
            name, option = args.name[index], "--name"
        else:
            name, option = derive_name(domain, args.instance_id), "--registry"
        if name in names:
            raise BadOption(
                option,
                f"registries {names[name]!r} and {domain!r} would both be ImagePullSecret {name!r}: "
                "give one --name per --registry",
            )
        names[name] = domain
        registries.append((name, domain, option))
    plan = Plan(
        registries=registries,
        namespaces=args.namespaces,
        service_accounts=args.service_accounts,
        excluded=args.exclude_namespaces,
        region=short,
        longregion=long,
        namespace_selector=parse_namespace_selector(args.namespace_selector),
    )
    explicit: set[str] = set()
    for value in args.host:
        domain, ip = parse_host(value)
        check_host_domain("--host", domain)
        check_ip("--host", ip, domain)
        if domain in explicit:
            raise BadOption("--host", f"domain {domain!r} is given twice")
        explicit.add(domain)
        plan.hosts.append(HostEntry(domain, ip, "--host"))
    if private_ip is not None:
        check_ip("--private-ip", private_ip, "private IP")
        hosts = [strip_port(domain) for _, domain, _ in registries]
        private = [h for h in hosts if h.split(".", 1)[0].endswith("-vpc")] or hosts
        for host in dict.fromkeys(private):
            if host not in explicit:
                check_hosts_name("--private-ip", host, "registry domain")
                plan.hosts.append(HostEntry(host, private_ip, "--private-ip"))
    registry_hosts = {strip_port(domain) for _, domain, _ in registries}
    for entry in plan.hosts:
        if entry.domain not in registry_hosts:
            plan.warnings.append(
                f"warning: --host {entry.domain} is not one of the --registry domains (typo?); written anyway"
            )
    return plan


def parse_namespace_selector(text: str | None) -> dict[str, Any] | None:
    """``--namespace-selector`` in kubectl's syntax -> a LabelSelector (None: every namespace)."""
    if text is None:
        return None
    from tcr_assistant.spec.selectors import parse

    try:
        selector = parse(text)
    except ValueError as exc:
        raise BadOption("--namespace-selector", f"{text!r}: {exc}") from None
    return selector or None


def helm_test_namespace(plan: Plan) -> tuple[str | None, list[str]]:
    """The namespace ``helm test`` should check (None = the chart's default), and warnings.

    The chart's test checks namespace ``tests.namespace`` (default ``default``) and its
    ServiceAccount ``default``; with a limited scope, point it at a namespace that is served.
    """
    from tcr_assistant.spec.validation import parse_name_list_strict

    try:
        served = parse_name_list_strict(plan.namespaces, "namespace")
        excluded = parse_name_list_strict(plan.excluded, "namespace", allow_all=False) or []
        accounts = parse_name_list_strict(plan.service_accounts, "serviceaccount")
    except ValueError:
        return None, []  # reported by the validation
    warnings = []
    if plan.namespace_selector is not None:
        warnings.append(
            "warning: `helm test` checks namespace default, which --namespace-selector serves only if its labels "
            "match: install with --set tests.namespace=<a namespace whose labels match>"
        )
    if accounts is not None and "default" not in accounts:
        warnings.append(
            "warning: `helm test` checks ServiceAccount default, which --service-accounts leaves out: "
            "expect it to fail"
        )
    if served is None:
        if "default" in excluded:
            warnings.append(
                "warning: `helm test` checks namespace default, which --exclude-namespaces leaves out: "
                "install with --set tests.namespace=<a served namespace>"
            )
        return None, warnings
    candidates = [name for name in served if name not in excluded]
    if "default" in candidates or not candidates:
        return None, warnings
    return candidates[0], warnings


def make_values(plan: Plan, creds: Credentials) -> dict[str, Any]:
    """The values in the TKE add-on shape (what the template must write)."""
    crs = []
    for name, domain, _ in plan.registries:
        cr: dict[str, Any] = {
            "name": name,
            "namespaces": plan.namespaces,
            "serviceAccounts": plan.service_accounts,
        }
        if plan.excluded is not None:
            cr["excludedNamespaces"] = plan.excluded
        if plan.namespace_selector is not None:
            cr["namespaceSelector"] = plan.namespace_selector
        cr.update({"type": "docker", "dockerServer": domain})
        if creds.token_from is not None:
            cr["dockerTokenFrom"] = copy.deepcopy(creds.token_from)  # no dockerUsername: the chart refuses it
            crs.append(cr)
            continue
        cr["dockerUsername"] = creds.username
        if creds.secret_name is not None:
            secret: dict[str, str] = {"name": creds.secret_name}
            if creds.secret_key is not None:
                secret["key"] = creds.secret_key
            cr["dockerPasswordSecret"] = secret
        else:
            cr["dockerPassword"] = creds.password
        crs.append(cr)
    values: dict[str, Any] = {
        "global": {
            "cluster": {"region": plan.region, "longregion": plan.longregion},
            "imagePullSecretsCrs": crs,
            "hosts": [{"domain": h.domain, "ip": h.ip, "disabled": False} for h in plan.hosts],
        }
    }
    test_namespace, _ = helm_test_namespace(plan)
    if test_namespace is not None:
        values["tests"] = {"namespace": test_namespace}
    return values


def choose_private_ip(endpoints: Sequence[InternalEndpoint], instance_id: str, vpc_id: str | None) -> str:
    """The private IP of the instance's one running access link (in ``vpc_id`` when given)."""
    links = [e for e in endpoints if e.ip]
    if vpc_id:
        links = [e for e in links if e.vpc_id == vpc_id]
        if not links:
            raise TcrApiError(f"instance {instance_id} has no private-network access link in VPC {vpc_id}")
    running = [e for e in links if e.status.lower() == "running"]
    if not running:
        if links:
            states = ", ".join(f"{e.vpc_id} {e.ip} ({e.status or 'unknown'})" for e in links)
            raise TcrApiError(f"instance {instance_id} has no running private-network access link: {states}")
        raise TcrApiError(
            f"instance {instance_id} has no private-network access link: create one in the TCR console "
            "(Access management > Private network) or give --host DOMAIN=IP"
        )
    ips = sorted({e.ip for e in running})
    if len(ips) > 1:
        listing = ", ".join(f"{e.vpc_id}={e.ip}" for e in running)
        raise TcrApiError(
            f"instance {instance_id} has several private-network access links ({listing}): "
            "choose one with --vpc-id (the cluster's VPC)"
        )
    return ips[0]

