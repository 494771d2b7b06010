"""scripts/values: write the chart's values from the choices the TKE console asks for.

One ImagePullSecret per ``--registry`` domain, the credentials (a password read from stdin or a
file, an existing Secret, or a token issued through TCR's ``CreateInstanceToken``), the
namespaces and ServiceAccounts served, and the private-network hosts entries. The values are
rendered from ``values.yaml.j2`` (the TKE add-on shape), read back, checked against the chart's
``values.schema.json`` and against the webhook's own rules
(``tcr_assistant.validation.validate_image_pull_secret``), and only then written. A problem is
reported as ``error: --option: what is wrong`` and the exit status is 2 (1 for a failed API
call or output). No password or token is ever printed to the terminal or in a message.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jinja2
import yaml

from harness import REPO_ROOT

TEMPLATE = Path(__file__).with_name("values.yaml.j2")
DEFAULT_SCHEMA = REPO_ROOT / "chart" / "values.schema.json"
PROG = "scripts/values"
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


class BadOption(Exception):
    """A problem with the command line, attributed to one option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


class Failure(Exception):
    """A problem that is not the user's options (API call, output file): exit status 1."""


# --------------------------------------------------------------------------------------------
# YAML quoting


_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def yaml_quote(value: object) -> str:
    """``value`` as a YAML double-quoted scalar of printable ASCII only.

    Backslash and double quote are escaped, every other character outside printable ASCII
    becomes ``\\xXX`` / ``\\uXXXX`` / ``\\UXXXXXXXX``, so no parser (PyYAML, Go's yaml as helm
    uses it) folds, trims or reinterprets anything: any string reads back unchanged.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"yaml_quote takes a string, not {type(value).__name__}")
    text = str(value)
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def render(values: Mapping[str, Any], holds_password: bool) -> str:
    """The values file text from ``values.yaml.j2`` (``values`` in the TKE add-on shape)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["q"] = yaml_quote
    template = env.get_template(TEMPLATE.name)
    g = values["global"]
    return template.render(crs=g["imagePullSecretsCrs"], hosts=g["hosts"], cluster=g["cluster"],
                           tests=values.get("tests"), holds_password=holds_password)


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write tcr-addon chart values (the TKE add-on's shape) from the choices the console asks\n"
            "for: one ImagePullSecret per registry domain, its credentials, which namespaces and\n"
            "ServiceAccounts get it, and optional private-network hosts entries. The result is\n"
            "checked against chart/values.schema.json and the webhook's own rules before it is\n"
            "written. Passwords and tokens are never taken on the command line and never printed."
        ),
        epilog=(
            "examples:\n"
            "  # a password from a file, both domains of an instance, all namespaces\n"
            "  scripts/values --registry demo.tencentcloudcr.com --registry demo-vpc.tencentcloudcr.com \\\n"
            "      --instance-id tcr-abcd1234 --username 100012345678 --password-file ~/tcr-token -o values.yaml\n"
            "  # the password on stdin, two namespaces, a private-network hosts entry\n"
            "  printf %s \"$TOKEN\" | scripts/values --registry demo-vpc.tencentcloudcr.com \\\n"
            "      --username 100012345678 --password-stdin --namespaces team-a,team-b \\\n"
            "      --host demo-vpc.tencentcloudcr.com=10.0.0.10 -o values.yaml\n"
            "  # issue a long-term token and look up the private IP (API key from the environment)\n"
            "  TENCENTCLOUD_SECRET_ID=... TENCENTCLOUD_SECRET_KEY=... scripts/values \\\n"
            "      --registry demo-vpc.tencentcloudcr.com --issue-token --instance-id tcr-abcd1234 \\\n"
            "      --region ap-guangzhou --private-ip auto -o values.yaml\n"
            "  # then\n"
            "  helm upgrade --install tcr-addon ./chart -n tcr-assistant-system --create-namespace -f values.yaml\n"
            "\n"
            "exit status: 0 written; 2 a bad option (the message names it); 1 an API call or the\n"
            "output failed."
        ),
    )
    reg = parser.add_argument_group("registries (step 1: the TCR instance)")
    reg.add_argument(
        "--registry", metavar="DOMAIN", action="append", default=[],
        help="registry domain, bare host with optional :port (repeatable, one ImagePullSecret each), e.g. "
        "<name>.tencentcloudcr.com (public) and <name>-vpc.tencentcloudcr.com (private network)",
    )
    reg.add_argument(
        "--name", metavar="NAME", action="append", default=[],
        help="ImagePullSecret name for the --registry at the same position (repeat it once per --registry). "
        "Default: <instance-id>-vpc / <instance-id>-public with --instance-id (as TKE names them), else "
        "the first label of a *.tencentcloudcr.com domain or the whole host name",
    )
    reg.add_argument("--instance-id", metavar="ID", help="TCR instance id (tcr-xxxxxxxx): names, and the API calls")
    reg.add_argument(
        "--region", metavar="REGION",
        help="region of the instance and the cluster, long (ap-guangzhou) or TKE short (gz) form: "
        "global.cluster.{region,longregion}, and the API calls",
    )

    cred = parser.add_argument_group("credentials (step 2: password-free pull); choose exactly one source")
    source = cred.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true",
                        help="read the password or token from stdin (one trailing LF or CRLF is dropped; "
                        "prompts without echo on a terminal)")
    source.add_argument("--password-file", metavar="FILE",
                        help="read the password or token from FILE (one trailing LF or CRLF is dropped)")
    source.add_argument("--existing-secret", metavar="NAME[:KEY]",
                        help="take the password from key KEY (default: password) of Secret NAME in the "
                        "add-on's namespace (dockerPasswordSecret); no password in the values")
    source.add_argument("--issue-token", action="store_true",
                        help="issue a registry token for the API key's user through TCR's CreateInstanceToken "
                        "(needs --instance-id, --region and TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY, plus "
                        "TENCENTCLOUD_SESSION_TOKEN for a temporary key). Uninstalling does not revoke it")
    cred.add_argument("--username", metavar="USER",
                      help="registry user name (with --password-stdin, --password-file or --existing-secret)")
    cred.add_argument("--token-type", choices=("longterm", "temp"), default="longterm",
                      help="with --issue-token: long-term token (default) or a temporary one (valid 1 hour)")
    cred.add_argument("--token-description", metavar="TEXT", default="tcr-addon",
                      help="with --issue-token: description of the long-term token (default: tcr-addon)")

    scope = parser.add_argument_group("scope")
    scope.add_argument("--namespaces", metavar="LIST", default="*",
                       help='namespaces served: "*" (default, all, also new ones) or exact names "a,b"')
    scope.add_argument("--service-accounts", metavar="LIST", default="*",
                       help='ServiceAccounts (by name, in those namespaces): "*" (default) or "default,builder"')
    scope.add_argument("--exclude-namespaces", metavar="LIST",
                       help='namespaces never served, "kube-system,kube-public" (default: none)')

    net = parser.add_argument_group("private-network resolution (step 3: hosts-updater)")
    net.add_argument("--host", metavar="DOMAIN=IP", action="append", default=[],
                     help="hosts entry written on every node (repeatable): global.hosts")
    net.add_argument("--private-ip", metavar="IP|auto",
                     help="private IP for the private-network registry domains (those named <name>-vpc.*, "
                     "else every --registry) that no --host covers; 'auto' looks it up with TCR's "
                     "DescribeInternalEndpoints (needs --instance-id, --region and the API key)")
    net.add_argument("--vpc-id", metavar="VPC",
                     help="with --private-ip auto: use the access link of this VPC when there are several")

    api = parser.add_argument_group("Tencent Cloud API")
    api.add_argument("--endpoint", metavar="HOST:PORT",
                     help="API endpoint (default: $TCR_API_ENDPOINT, else tcr.tencentcloudapi.com); "
                     "https unless given as http://HOST:PORT")

    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="FILE", default="-",
                     help="write the values to FILE (mode 0600 when it holds a password); default stdout, "
                     "which is refused when it is a terminal and the values hold a password")
    out.add_argument("--schema", metavar="FILE", default=str(DEFAULT_SCHEMA),
                     help="values schema to check against (default: chart/values.schema.json)")
    return parser


# --------------------------------------------------------------------------------------------
# The plan: options turned into values, remembering which option each part came from


@dataclass
class Credentials:
    username: str
    password: str | None = None
    secret_name: str | None = None
    secret_key: str | None = None
    password_option: str = "--password-stdin"
    username_option: str = "--username"


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
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise BadOption(option, f"{what}: {ip!r} is not an IPv4 address") from None
    if address.version != 4 or str(address) != ip:
        raise BadOption(option, f"{what}: {ip!r} is not an IPv4 address in dotted form (e.g. 10.0.0.10)")


def check_host_domain(option: str, domain: str) -> None:
    from tcr_assistant.validation import validate_server

    problem = validate_server(domain)
    if problem is not None:
        raise BadOption(option, f"domain {domain!r} {problem}")
    if ":" in domain:
        raise BadOption(option, f"domain {domain!r} must be a host name without ':port'")


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
    if not (args.password_stdin or args.password_file or args.existing_secret or args.issue_token):
        raise BadOption(
            "--password-stdin",
            "give the credentials: --username with --password-stdin, --password-file or --existing-secret, "
            "or --issue-token",
        )
    if args.issue_token and args.username is not None:
        raise BadOption("--username", "not with --issue-token (the API returns the user name)")
    if not args.issue_token and not args.username:
        raise BadOption("--username", "is required with --password-stdin, --password-file and --existing-secret")
    if not args.issue_token and args.token_type != "longterm":
        raise BadOption("--token-type", "only goes with --issue-token")
    if not args.issue_token and args.token_description != "tcr-addon":
        raise BadOption("--token-description", "only goes with --issue-token")
    needs_api = [
        opt for opt, on in (("--issue-token", args.issue_token), ("--private-ip auto", args.private_ip == "auto")) if on
    ]
    for opt in needs_api:
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
                plan.hosts.append(HostEntry(host, private_ip, "--private-ip"))
    registry_hosts = {strip_port(domain) for _, domain, _ in registries}
    for entry in plan.hosts:
        if entry.domain not in registry_hosts:
            plan.warnings.append(
                f"warning: --host {entry.domain} is not one of the --registry domains (typo?); written anyway"
            )
    return plan


def helm_test_namespace(plan: Plan) -> tuple[str | None, list[str]]:
    """The namespace ``helm test`` should check (None = the chart's default), and warnings.

    The chart's test checks namespace ``tests.namespace`` (default ``default``) and its
    ServiceAccount ``default``; with a limited scope, point it at a namespace that is served.
    """
    from tcr_assistant.validation import parse_name_list_strict

    try:
        served = parse_name_list_strict(plan.namespaces, "namespace")
        excluded = parse_name_list_strict(plan.excluded, "namespace", allow_all=False) or []
        accounts = parse_name_list_strict(plan.service_accounts, "serviceaccount")
    except ValueError:
        return None, []  # reported by the validation
    warnings = []
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
        cr.update({"type": "docker", "dockerServer": domain, "dockerUsername": creds.username})
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


# --------------------------------------------------------------------------------------------
# Validation: the webhook's rules and the chart's schema, reported per option


def cr_spec(cr: Mapping[str, Any]) -> dict[str, Any]:
    """The ImagePullSecret spec the chart makes of one values entry (templates/imagepullsecrets.yaml)."""
    spec: dict[str, Any] = {
        "namespaces": str(cr.get("namespaces", "*")),
        "serviceAccounts": str(cr.get("serviceAccounts", "*")),
    }
    if cr.get("excludedNamespaces"):
        spec["excludedNamespaces"] = cr["excludedNamespaces"]
    docker: dict[str, Any] = {"server": cr.get("dockerServer"), "username": cr.get("dockerUsername")}
    secret = cr.get("dockerPasswordSecret")
    if secret:
        docker["passwordSecretRef"] = {"name": secret.get("name"), "key": secret.get("key") or "password"}
    else:
        docker["password"] = cr.get("dockerPassword")
    spec["docker"] = docker
    return spec


def _spec_option(path: str, creds: Credentials) -> str:
    if path == "metadata.name":
        return "--name"
    if path.startswith("spec.docker.passwordSecretRef"):
        return "--existing-secret"
    return {
        "spec.namespaces": "--namespaces",
        "spec.serviceAccounts": "--service-accounts",
        "spec.excludedNamespaces": "--exclude-namespaces",
        "spec.docker.server": "--registry",
        "spec.docker.username": creds.username_option,
        "spec.docker.password": creds.password_option,
        "spec.docker": creds.password_option,
    }.get(path, path)


_VALUES_OPTIONS = {
    "name": "--name",
    "namespaces": "--namespaces",
    "serviceAccounts": "--service-accounts",
    "excludedNamespaces": "--exclude-namespaces",
    "dockerServer": "--registry",
    "dockerPasswordSecret": "--existing-secret",
}


def load_schema(path: str) -> dict[str, Any]:
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadOption("--schema", f"{path} does not exist (the chart's values.schema.json)") from None
    except (OSError, ValueError) as exc:
        raise BadOption("--schema", f"cannot read {path}: {exc}") from None
    if not isinstance(schema, dict):
        raise BadOption("--schema", f"{path} is not a JSON schema object")
    return schema


def validate(values: Mapping[str, Any], plan: Plan, creds: Credentials, schema: Mapping[str, Any]) -> list[str]:
    """Every problem as ``--option: message`` (deduplicated, in a stable order); [] = valid."""
    import jsonschema

    from tcr_assistant.validation import validate_image_pull_secret

    problems: list[str] = []
    reported: set[str] = set()

    def add(option: str, message: str) -> None:
        line = f"{option}: {message}"
        if line not in problems:
            problems.append(line)
        reported.add(option)

    crs = values["global"]["imagePullSecretsCrs"]
    for (name, domain, name_option), cr in zip(plan.registries, crs, strict=True):
        obj = {"metadata": {"name": cr["name"]}, "spec": cr_spec(cr)}
        errors = validate_image_pull_secret(obj)
        bad_server = any(e.field == "spec.docker.server" for e in errors)
        for error in errors:
            option = _spec_option(error.field, creds)
            if error.field == "metadata.name" and bad_server and name_option == "--registry":
                continue  # a name made from a bad domain: the domain's own message says it better
            if error.field == "metadata.name":
                option = name_option
                message = f"ImagePullSecret name {name!r}" + (
                    f" (made from {domain!r}; give --name)" if name_option == "--registry" else ""
                ) + f": {error.message}"
            elif option == "--registry":
                message = f"{domain!r} {error.message}"
            elif error.field in ("spec.namespaces", "spec.serviceAccounts", "spec.excludedNamespaces"):
                message = f"{obj['spec'][error.field.removeprefix('spec.')]!r}: {error.message}"
            else:
                message = error.message  # the validation module never quotes passwords
            add(option, message)

    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    for schema_error in sorted(validator.iter_errors(values), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(schema_error.absolute_path)
        option, secret = "values", False
        if path[:2] == ["global", "imagePullSecretsCrs"] and len(path) >= 4:
            key = str(path[3])
            if key == "name" and isinstance(path[2], int):
                option = plan.registries[path[2]][2]
            elif key == "dockerUsername":
                option, secret = creds.username_option, creds.username_option == "--issue-token"
            elif key == "dockerPassword":
                option, secret = creds.password_option, True
            else:
                option = _VALUES_OPTIONS.get(key, "values")
        elif path[:2] == ["global", "hosts"] and len(path) >= 3 and isinstance(path[2], int):
            option = plan.hosts[path[2]].option
        elif path[:2] == ["global", "cluster"]:
            option = "--region"
        elif path[:1] == ["tests"]:
            option = "--namespaces"  # tests.namespace is chosen from the served namespaces
        if option in reported:
            continue  # the webhook's rules already said it, with a better message
        where = "/".join(str(p) for p in path)
        if secret:
            add(option, f"does not match the chart's values schema at {where} (rule {schema_error.validator})")
        else:
            add(option, f"the chart's values schema refuses {where}: {schema_error.message}")
    return problems


# --------------------------------------------------------------------------------------------
# The API steps


def choose_private_ip(endpoints: Sequence[Any], instance_id: str, vpc_id: str | None) -> str:
    from harness.tcr_api import TcrApiError

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


# --------------------------------------------------------------------------------------------
# Output


def write_output(path: str, text: str, holds_password: bool, stdout: IO[str]) -> None:
    if path == "-":
        if holds_password and stdout.isatty():
            raise BadOption(
                "-o", "refusing to print a password to the terminal: write it with -o FILE, or redirect stdout"
            )
        stdout.write(text)
        stdout.flush()
        return
    target = Path(path).expanduser()
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent.resolve()))
    except OSError as exc:
        raise Failure(f"-o {path}: cannot write in {target.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if not holds_password:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)  # mkstemp made it 0600
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise Failure(f"-o {path}: cannot write: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------


class _Run:
    """One run of the wizard; remembers an issued token so a later failure can name it."""

    def __init__(self, args: argparse.Namespace, stdin: IO[str], stdout: IO[str], stderr: IO[str],
                 env: Mapping[str, str]) -> None:
        self.args, self.stdin, self.stdout, self.stderr, self.env = args, stdin, stdout, stderr, env
        self.token_id: str | None = None

    def say(self, message: str) -> None:
        print(f"{PROG}: {message}", file=self.stderr)

    def report(self, problems: Sequence[str]) -> None:
        for problem in problems:
            self.say(f"error: {problem}")

    def credentials(self) -> Credentials:
        args = self.args
        if args.issue_token:
            return Credentials(PLACEHOLDER_USER, password=PLACEHOLDER_SECRET, password_option="--issue-token",
                               username_option="--issue-token")
        if args.existing_secret is not None:
            name, sep, key = args.existing_secret.partition(":")
            return Credentials(args.username, secret_name=name, secret_key=key if sep else None)
        option = "--password-stdin" if args.password_stdin else "--password-file"
        return Credentials(args.username, password=read_password(args, self.stdin), password_option=option)

    def run(self) -> int:
        args = self.args
        check_combinations(args)
        schema = load_schema(args.schema)
        creds = self.credentials()
        private_ip = PLACEHOLDER_IP if args.private_ip == "auto" else args.private_ip

        # Check every option before any API call: a typo must not cost a token.
        plan = make_plan(args, private_ip)
        problems = validate(make_values(plan, creds), plan, creds, schema)
        if problems:
            self.report(problems)
            return 2

        if args.issue_token or args.private_ip == "auto":
            from harness import tcr_api

            api = tcr_api.from_environment(resolve_region(args.region)[1], args.endpoint, dict(self.env))
            if args.private_ip == "auto":  # read-only, so before the token is created
                endpoints = api.describe_internal_endpoints(args.instance_id)
                private_ip = choose_private_ip(endpoints, args.instance_id, args.vpc_id)
                self.say(f"instance {args.instance_id}: private-network IP {private_ip}")
                plan = make_plan(args, private_ip)
            if args.issue_token:
                issued = api.create_instance_token(args.instance_id, args.token_type, args.token_description)
                self.token_id = issued.token_id
                creds = Credentials(issued.username, password=issued.token, password_option="--issue-token",
                                    username_option="--issue-token")
                note = f"issued a {args.token_type} token for user {issued.username}"
                if issued.token_id:
                    note += f" (token id {issued.token_id}; delete it in the TCR console when it is no longer used)"
                self.say(note)

        for warning in [*plan.warnings, *helm_test_namespace(plan)[1]]:
            self.say(warning)
        values = make_values(plan, creds)
        holds_password = creds.password is not None
        text = render(values, holds_password)
        if yaml.safe_load(text) != values:
            raise Failure("internal error: the rendered values do not read back as intended (template bug)")
        problems = validate(values, plan, creds, schema)
        if problems:  # only values the API returned can get here
            self.report(problems)
            return 1
        write_output(args.output, text, holds_password, self.stdout)
        names = ", ".join(name for name, _, _ in plan.registries)
        where = "stdout" if args.output == "-" else args.output
        count = len(plan.hosts)
        self.say(
            f"wrote {where}: {len(plan.registries)} ImagePullSecret(s) ({names}), "
            f"{count} hosts entr{'y' if count == 1 else 'ies'}"
        )
        return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the wizard; returns the exit status (argparse usage errors exit with 2 themselves)."""
    from harness.tcr_api import TcrApiError

    args = build_parser().parse_args(argv)
    run = _Run(
        args,
        sys.stdin if stdin is None else stdin,
        sys.stdout if stdout is None else stdout,
        sys.stderr if stderr is None else stderr,
        os.environ if environ is None else environ,
    )
    try:
        status = run.run()
    except BadOption as exc:
        run.say(f"error: {exc}")
        status = 2
    except (Failure, TcrApiError) as exc:
        run.say(f"error: {exc}")
        status = 1
    except KeyboardInterrupt:
        run.say("interrupted")
        status = 130
    if status != 0 and run.token_id is not None:
        run.say(f"note: token {run.token_id} was issued but not written; delete it in the TCR console")
    return status
