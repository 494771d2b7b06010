"""scripts/values: write the chart's values from the choices the TKE console asks for.

One ImagePullSecret per ``--registry`` domain, the credentials (a password read from stdin or a
file, an existing Secret, a token issued through TCR's ``CreateInstanceToken``, or with
``--mint-in-cluster`` none at all: ``dockerTokenFrom``, the controller mints and renews the
token), the namespaces and ServiceAccounts served, and the private-network hosts entries. The
values are rendered from ``values.yaml.j2`` (the TKE add-on shape), read back, checked against
the chart's ``values.schema.json`` and, on the ImagePullSecrets ``helm template`` makes of them,
against the webhook's own rules (``tcr_assistant.spec.validation.validate_image_pull_secret``),
and only then written. A problem is reported as ``error: --option: what is wrong`` and the exit
status is 2 (1 for a failed API call, helm or output). No password or token is ever printed to
the terminal or in a message.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from values_wizard import PROG, from_cluster, tcr_api
from values_wizard.check import DEFAULT_SCHEMA, load_schema, validate
from values_wizard.errors import BadOption, Failure
from values_wizard.helm import NAMESPACE
from values_wizard.plan import (
    PLACEHOLDER_IP,
    PLACEHOLDER_SECRET,
    PLACEHOLDER_USER,
    Credentials,
    check_combinations,
    check_endpoint,
    check_host_domain,
    check_ip,
    choose_private_ip,
    helm_test_namespace,
    make_plan,
    make_values,
    parse_host,
    read_password,
    resolve_region,
    token_from,
    token_type,
)
from values_wizard.render import render_checked
from values_wizard.tcr_api import ENV_ENDPOINT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write tcr-addon chart values (the TKE add-on's shape) from the choices the console asks\n"
            "for: one ImagePullSecret per registry domain, its credentials, which namespaces and\n"
            "ServiceAccounts get it, and optional private-network hosts entries. The result is\n"
            "checked against chart/values.schema.json and, on the ImagePullSecrets `helm template`\n"
            "renders from it, the webhook's own rules before it is written (helm: `make setup`).\n"
            "Passwords and tokens are never taken on the command line and never printed."
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
            "  # no token in the values: the controller mints a temp token in the cluster and renews it,\n"
            "  # with the API key in Secret tcr-api-key (keys secretId, secretKey) of the add-on's namespace\n"
            "  scripts/values --registry demo-vpc.tencentcloudcr.com --mint-in-cluster \\\n"
            "      --instance-id tcr-abcd1234 --region ap-guangzhou --api-key-secret tcr-api-key -o values.yaml\n"
            "  # take over the ImagePullSecrets made by hand in the cluster of $KUBECONFIG\n"
            "  scripts/values --from-cluster --context prod -o values.yaml\n"
            "  # then\n"
            "  helm upgrade --install tcr-addon ./chart -n tcr-assistant-system --create-namespace -f values.yaml\n"
            "\n"
            "--from-cluster reads every ImagePullSecret (tcr.tencentcloudcr.com/v1) of the cluster, as\n"
            "kubectl does ($KUBECONFIG, else ~/.kube/config; --context), and writes one entry each with\n"
            "the same name and scope:\n"
            "  - namespaces, serviceAccounts (absent: \"*\"), excludedNamespaces, namespaceSelector,\n"
            "    docker.server and docker.username are copied;\n"
            "  - an inline docker.password becomes dockerPassword (the chart keeps it in its Secret\n"
            "    tcr-assistant-registry-credentials); docker.passwordSecretRef {name, key} becomes\n"
            "    dockerPasswordSecret {name, key}: that Secret stays in the release namespace, labelled\n"
            "    tcr.tencentcloudcr.com/credential-source=true;\n"
            "  - anything no chart value expresses is refused, naming the object and the field: other\n"
            "    spec or docker fields, owner references, foreign finalizers, an object being deleted;\n"
            "    labels and annotations stay on the object (Helm leaves metadata it does not render);\n"
            "  - an object of Helm release --release in --release-namespace is the chart's already:\n"
            "    skipped with a note (keep it in that release's values); one of another release is\n"
            "    refused, naming it;\n"
            "  - global.hosts comes from ConfigMap updater-config (key config.json, the hosts-updater's\n"
            "    format) in --release-namespace when no Helm release owns it, plus --host (which wins\n"
            "    for the same domain); otherwise from --host alone.\n"
            "It goes with --host, --region, -o, --schema; the credential and scope options are refused\n"
            "(each object brings its own). The file is written with mode 0600. Then\n"
            "`scripts/migrate -f <values> --apply` hands the objects to the release (each password\n"
            "moves into the chart's credentials Secret), and `helm upgrade -f <values>` adopts them.\n"
            "\n"
            "exit status: 0 written; 2 a bad option or an object that cannot be taken over (the message\n"
            "names it); 1 an API call, helm or the output failed."
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
    reg.add_argument("--instance-id", metavar="ID",
                     help="TCR instance id (tcr-xxxxxxxx): names, the API calls, and the instance the "
                     "controller mints tokens for (--mint-in-cluster)")
    reg.add_argument(
        "--region", metavar="REGION",
        help="region of the instance and the cluster, long (ap-guangzhou) or TKE short (gz) form: "
        "global.cluster.{region,longregion}, the API calls, and --mint-in-cluster (written in the long form)",
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
    source.add_argument("--mint-in-cluster", action="store_true",
                        help="the controller mints the registry token from the TCR API in the cluster and "
                        "renews it before it expires (dockerTokenFrom; needs --instance-id and --region, and "
                        "--api-key-secret or --web-identity); no password or user name in the values, and no "
                        "API call from here for it")
    cred.add_argument("--username", metavar="USER",
                      help="registry user name (with --password-stdin, --password-file or --existing-secret)")
    cred.add_argument("--api-key-secret", metavar="NAME",
                      help="with --mint-in-cluster: the controller's TCR API key is in Secret NAME of the add-on's "
                      "namespace, keys secretId and secretKey, labelled "
                      "tcr.tencentcloudcr.com/credential-source=true (apiKeySecretRef; the kubectl commands "
                      "that make it are printed)")
    cred.add_argument("--web-identity", action="store_true",
                      help="with --mint-in-cluster: the controller's TKE Pod identity (its ServiceAccount bound "
                      "to a CAM role) instead of an API key (webIdentity)")
    cred.add_argument("--token-type", choices=("longterm", "temp"),
                      help="with --issue-token: long-term token (default) or a temporary one (valid 1 hour); "
                      "with --mint-in-cluster: temp (default, renewed by the controller) or longterm (minted once)")
    cred.add_argument("--token-description", metavar="TEXT", default="tcr-addon",
                      help="with --issue-token: description of the long-term token (default: tcr-addon)")

    scope = parser.add_argument_group("scope")
    scope.add_argument("--namespaces", metavar="LIST", default="*",
                       help='namespaces served: "*" (default, all, also new ones) or exact names "a,b"')
    scope.add_argument("--service-accounts", metavar="LIST", default="*",
                       help='ServiceAccounts (by name, in those namespaces): "*" (default) or "default,builder"')
    scope.add_argument("--exclude-namespaces", metavar="LIST",
                       help='namespaces never served, "kube-system,kube-public" (default: none)')
    scope.add_argument("--namespace-selector", metavar="SELECTOR",
                       help="serve only namespaces whose labels match, in kubectl's syntax: "
                       '"team=a,env in (prod,stage)", "env!=dev", "sandbox" (label present), "!legacy" (absent); '
                       "a namespace must match both this and --namespaces (default: every namespace)")

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
                     "https unless given as http://HOST:PORT, which is refused without --insecure-http-endpoint. "
                     "With --mint-in-cluster also the endpoint the controller calls (HTTPS only; "
                     "$TCR_API_ENDPOINT is not written)")
    api.add_argument("--insecure-http-endpoint", action="store_true",
                     help="allow an http:// endpoint (a local test stand-in): the issued token and the private IP "
                     "then cross the network in clear. Not with --mint-in-cluster")

    cluster = parser.add_argument_group("from the cluster (migrating hand-made ImagePullSecrets; rules below)")
    cluster.add_argument("--from-cluster", action="store_true",
                         help="one entry per ImagePullSecret of the cluster of $KUBECONFIG (else ~/.kube/config), "
                         "same name, scope and credentials; instead of --registry and the credential options")
    cluster.add_argument("--context", metavar="NAME",
                         help="with --from-cluster: the kubeconfig context (default: its current context)")
    cluster.add_argument("--release", metavar="NAME", default=from_cluster.DEFAULT_RELEASE,
                         help="with --from-cluster: the Helm release the values are for; its own objects are "
                         f"skipped, another release's refused (default: {from_cluster.DEFAULT_RELEASE})")
    cluster.add_argument("--release-namespace", metavar="NS", default=from_cluster.DEFAULT_RELEASE_NAMESPACE,
                         help="with --from-cluster: that release's namespace, where ConfigMap updater-config and "
                         f"the password Secrets are (default: {from_cluster.DEFAULT_RELEASE_NAMESPACE})")

    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="FILE", default="-",
                     help="write the values to FILE (mode 0600 when it holds a password, and always with "
                     "--from-cluster); default stdout, "
                     "which is refused when it is a terminal and the values hold a password")
    out.add_argument("--schema", metavar="FILE", default=str(DEFAULT_SCHEMA),
                     help="values schema to check against (default: chart/values.schema.json)")
    return parser


# --------------------------------------------------------------------------------------------
# Output


def write_output(path: str, text: str, holds_password: bool, stdout: IO[str], *, private: bool = False) -> None:
    """``text`` to stdout (``-``) or atomically to ``path``: mode 0600 when it holds a password or ``private``."""
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
        if not (holds_password or private):
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)  # mkstemp made it 0600
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise Failure(f"-o {path}: cannot write: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# --from-cluster

#: Options that go with --from-cluster (besides --from-cluster itself).
FROM_CLUSTER_OPTIONS = {"from_cluster", "context", "release", "release_namespace", "host", "region", "output",
                        "schema"}
CLUSTER_ONLY_OPTIONS = {"context", "release", "release_namespace"}
CREDENTIAL_OPTIONS = {"password_stdin", "password_file", "existing_secret", "issue_token", "mint_in_cluster",
                      "api_key_secret", "web_identity", "username", "token_type", "token_description"}


def given_options(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options given on the command line (defaults left out)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def option_names() -> dict[str, str]:
    """destination -> the option's long name, for messages."""
    return {action.dest: action.option_strings[-1] for action in build_parser()._actions if action.option_strings}


def check_from_cluster_combinations(given: set[str], from_cluster_on: bool) -> None:
    names = option_names()
    if not from_cluster_on:
        for dest in sorted(given & CLUSTER_ONLY_OPTIONS):
            raise BadOption(names[dest], "only goes with --from-cluster")
        return
    for dest in sorted(given & CREDENTIAL_OPTIONS, key=lambda d: names[d]):
        raise BadOption(
            names[dest],
            "not with --from-cluster: each ImagePullSecret brings its own credentials (its password or its "
            "passwordSecretRef), which the values take over",
        )
    for dest in sorted(given - FROM_CLUSTER_OPTIONS, key=lambda d: names[d]):
        raise BadOption(
            names[dest],
            "not with --from-cluster: the registries, names and scope come from the ImagePullSecrets read "
            "(it goes with --host, --region, --context, --release, --release-namespace, -o and --schema)",
        )


# --------------------------------------------------------------------------------------------


class _Run:
    """One run of the wizard; remembers an issued token so a later failure can name it."""

    def __init__(self, args: argparse.Namespace, stdin: IO[str], stdout: IO[str], stderr: IO[str],
                 env: Mapping[str, str], given: set[str] | None = None) -> None:
        self.args, self.stdin, self.stdout, self.stderr, self.env = args, stdin, stdout, stderr, env
        self.given = given if given is not None else set()
        self.token_id: str | None = None

    def say(self, message: str) -> None:
        print(f"{PROG}: {message}", file=self.stderr)

    def report(self, problems: Sequence[str]) -> None:
        for problem in problems:
            self.say(f"error: {problem}")

    def credentials(self) -> Credentials:
        args = self.args
        if args.mint_in_cluster:
            return Credentials(None, token_from=token_from(args), password_option="--mint-in-cluster",
                               username_option="--mint-in-cluster")
        if args.issue_token:
            return Credentials(PLACEHOLDER_USER, password=PLACEHOLDER_SECRET, password_option="--issue-token",
                               username_option="--issue-token")
        if args.existing_secret is not None:
            name, sep, key = args.existing_secret.partition(":")
            return Credentials(args.username, secret_name=name, secret_key=key if sep else None)
        option = "--password-stdin" if args.password_stdin else "--password-file"
        return Credentials(args.username, password=read_password(args, self.stdin), password_option=option)

    def run_from_cluster(self) -> int:
        """``--from-cluster``: the values from the cluster's ImagePullSecrets (see ``from_cluster``)."""
        args = self.args
        schema = load_schema(args.schema)
        short, long = resolve_region(args.region)
        extra_hosts: list[dict[str, Any]] = []
        for value in args.host:
            domain, ip = parse_host(value)
            check_host_domain("--host", domain)
            check_ip("--host", ip, domain)
            if domain in {h["domain"] for h in extra_hosts}:
                raise BadOption("--host", f"domain {domain!r} is given twice")
            extra_hosts.append({"domain": domain, "ip": ip, "disabled": False})

        api = from_cluster.connect(self.env, args.context)
        try:
            objects = from_cluster.list_image_pull_secrets(api)
            taken = from_cluster.take(objects, args.release, args.release_namespace)
            try:
                configmap = from_cluster.read_hosts_configmap(api, args.release_namespace)
            except Failure as exc:  # optional: the hosts can come from --host
                taken.notes.append(f"{exc}: hosts entries come from --host only")
            else:
                from_cluster.hosts_from_configmap(configmap, args.release, args.release_namespace, taken)
        finally:
            api.close()
        for note in taken.notes:
            self.say(note)
        if taken.problems:
            for problem in taken.problems:
                self.say(f"error: --from-cluster: {problem}")
            return 2
        if not taken.crs:
            skipped = f" ({len(taken.skipped)} belong to release {args.release!r} already)" if taken.skipped else ""
            raise Failure(f"--from-cluster: no ImagePullSecret to take over in the cluster{skipped}: nothing written")

        hosts = list(taken.hosts or [])
        for entry in extra_hosts:
            replaced = [h for h in hosts if h["domain"] == entry["domain"]]
            if replaced:
                self.say(f"--host {entry['domain']}={entry['ip']} replaces the cluster's entry for that domain")
                hosts = [h for h in hosts if h["domain"] != entry["domain"]]
            hosts.append(entry)
        values = {"global": {"cluster": {"region": short, "longregion": long},
                             "imagePullSecretsCrs": taken.crs, "hosts": hosts}}
        holds_password = bool(taken.passwords)
        text = render_checked(values, holds_password)
        problems = from_cluster.validate(values, text, schema, taken.passwords)
        if problems:
            for problem in problems:
                self.say(f"error: --from-cluster: {problem}")
            return 2
        write_output(args.output, text, holds_password, self.stdout, private=True)
        where = "stdout" if args.output == "-" else args.output
        names = ", ".join(cr["name"] for cr in taken.crs)
        self.say(
            f"wrote {where}: {len(taken.crs)} ImagePullSecret(s) ({names}), "
            f"{len(hosts)} hosts entr{'y' if len(hosts) == 1 else 'ies'}; hand them to the release with "
            f"`scripts/migrate -f <values> --apply`, then `helm upgrade {args.release} ./chart "
            f"-n {args.release_namespace} -f <values>`"
        )
        return 0

    def run(self) -> int:
        args = self.args
        check_from_cluster_combinations(self.given, args.from_cluster)
        if args.from_cluster:
            return self.run_from_cluster()
        check_combinations(args)
        check_endpoint(args, self.env)
        schema = load_schema(args.schema)
        creds = self.credentials()
        private_ip = PLACEHOLDER_IP if args.private_ip == "auto" else args.private_ip

        # Check every option before any API call: a typo must not cost a token.
        plan = make_plan(args, private_ip)
        values = make_values(plan, creds)
        holds_password = creds.password is not None
        text = render_checked(values, holds_password)
        problems = validate(values, text, plan, creds, schema)
        if problems:
            self.report(problems)
            return 2

        uses_api = args.issue_token or args.private_ip == "auto"
        if uses_api:
            api = tcr_api.from_environment(resolve_region(args.region)[1], args.endpoint, dict(self.env))
            if args.private_ip == "auto":  # read-only, so before the token is created
                endpoints = api.describe_internal_endpoints(args.instance_id)
                private_ip = choose_private_ip(endpoints, args.instance_id, args.vpc_id)
                self.say(f"instance {args.instance_id}: private-network IP {private_ip}")
                plan = make_plan(args, private_ip)
            if args.issue_token:
                kind = token_type(args)
                issued = api.create_instance_token(args.instance_id, kind, args.token_description)
                self.token_id = issued.token_id
                creds = Credentials(issued.username, password=issued.token, password_option="--issue-token",
                                    username_option="--issue-token")
                note = f"issued a {kind} token for user {issued.username}"
                if issued.token_id:
                    note += f" (token id {issued.token_id}; delete it in the TCR console when it is no longer used)"
                self.say(note)

        for warning in [*plan.warnings, *helm_test_namespace(plan)[1]]:
            self.say(warning)
        if args.mint_in_cluster:
            self.mint_notes()
        if uses_api:  # the values changed: check them again (without the API, they were just checked)
            values = make_values(plan, creds)
            holds_password = creds.password is not None
            text = render_checked(values, holds_password)
            problems = validate(values, text, plan, creds, schema)
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

    def mint_notes(self) -> None:
        """What ``--mint-in-cluster`` needs in the cluster, as commands without any secret value."""
        from tcr_assistant.spec.api import CREDENTIAL_SOURCE_SELECTOR

        args = self.args
        if args.api_key_secret is not None:
            name = args.api_key_secret
            self.say(
                f"note: the controller reads its TCR API key from Secret {name} in the add-on's namespace "
                f"({NAMESPACE} in the values file's install line; use yours if it differs): make it before "
                "installing, with the key of a CAM user allowed tcr:CreateInstanceToken on the instance:"
            )
            print(f"  kubectl -n {NAMESPACE} create secret generic {name} "
                  "--from-literal=secretId=… --from-literal=secretKey=…", file=self.stderr)
            print(f"  kubectl -n {NAMESPACE} label secret {name} {CREDENTIAL_SOURCE_SELECTOR}", file=self.stderr)
        else:
            self.say(
                "note: the controller mints with its TKE Pod identity: bind its ServiceAccount "
                "tcr-assistant-controller-manager to a CAM role allowed tcr:CreateInstanceToken on the "
                "instance (TKE console: Pod identity)"
            )
        if args.endpoint is None and self.env.get(ENV_ENDPOINT):
            # That variable points this tool's own calls; the cluster may need another host.
            self.say(f"note: {ENV_ENDPOINT} is not written into the values: give --endpoint for the controller "
                     "to use another TCR API host than tcr.tencentcloudapi.com")


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the wizard; returns the exit status (argparse usage errors exit with 2 themselves)."""
    args = build_parser().parse_args(argv)
    given = given_options(argv)
    run = _Run(
        args,
        sys.stdin if stdin is None else stdin,
        sys.stdout if stdout is None else stdout,
        sys.stderr if stderr is None else stderr,
        os.environ if environ is None else environ,
        given,
    )
    try:
        status = run.run()
    except BadOption as exc:
        run.say(f"error: {exc}")
        status = 2
    except (Failure, tcr_api.TcrApiError) as exc:
        run.say(f"error: {exc}")
        status = 1
    except KeyboardInterrupt:
        run.say("interrupted")
        status = 130
    if status != 0 and run.token_id is not None:
        run.say(f"note: token {run.token_id} was issued but not written; delete it in the TCR console")
    return status
