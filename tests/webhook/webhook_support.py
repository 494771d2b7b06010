"""Helpers for the webhook suite (imported by its tests and conftest)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.pki import CertificateAuthority, KeyPair
from support import helm, kubectl, load_crd, seed_sample, wait_for
from tcr_assistant.admission.server import WEBHOOK_PATH, WebhookServer

SEED_SAMPLE: dict[str, Any] = seed_sample()


def sample(name: str = "imagepullsecret-sample", **spec_changes: Any) -> dict[str, Any]:
    """A copy of the seed sample with a new name; ``docker__server="x"`` style keys edit nested fields.

    A value of ``None`` removes the field.
    """
    obj = copy.deepcopy(SEED_SAMPLE)
    obj["metadata"]["name"] = name
    for key, value in spec_changes.items():
        target = obj["spec"]
        parts = key.split("__")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if value is None:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return obj


def loopback_pair(ca: CertificateAuthority, common_name: str = "tcr-addon-webhook-test") -> KeyPair:
    return ca.issue(common_name, dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)


def write_pair(cert_dir: Path, pair: KeyPair) -> None:
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "tls.crt").write_bytes(pair.cert_pem)
    (cert_dir / "tls.key").write_bytes(pair.key_pem)


#: Bad specs: (id, sample() changes, field, expected message fragment). Shared by the unit tests and
#: the through-the-API-server tests.
BAD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # id, spec changes, field, expected message fragment
    ("server-empty", {"docker__server": ""}, "spec.docker.server", "must not be empty"),
    ("server-missing", {"docker__server": None}, "spec.docker.server", "is required"),
    (
        "server-scheme",
        {"docker__server": "https://example.com"},
        "spec.docker.server",
        'without a scheme: remove "https://"',
    ),
    ("server-scheme-http", {"docker__server": "http://example.com:80"}, "spec.docker.server", "without a scheme"),
    ("server-path", {"docker__server": "example.com/ns/repo"}, "spec.docker.server", "without a path"),
    ("server-trailing-slash", {"docker__server": "example.com/"}, "spec.docker.server", "without a path"),
    ("server-user", {"docker__server": "user@example.com"}, "spec.docker.server", "without a user part"),
    ("server-user-pass", {"docker__server": "u:p@example.com"}, "spec.docker.server", "without a user part"),
    ("server-space-inside", {"docker__server": "exa mple.com"}, "spec.docker.server", "must not contain spaces"),
    ("server-space-leading", {"docker__server": " example.com"}, "spec.docker.server", "must not contain spaces"),
    ("server-tab", {"docker__server": "example.com\t"}, "spec.docker.server", "whitespace"),
    (
        "server-underscore",
        {"docker__server": "my_registry.com"},
        "spec.docker.server",
        "not a valid DNS-1123 subdomain",
    ),
    ("server-upper", {"docker__server": "Example.com"}, "spec.docker.server", "must be lower case"),
    ("server-dash-label", {"docker__server": "-bad.example.com"}, "spec.docker.server", "valid DNS host name"),
    ("server-double-dot", {"docker__server": "a..b"}, "spec.docker.server", "valid DNS host name"),
    ("server-trailing-dot", {"docker__server": "example.com."}, "spec.docker.server", "must not end with '.'"),
    ("server-wildcard", {"docker__server": "*.example.com"}, "spec.docker.server", "no wildcards"),
    ("server-long-label", {"docker__server": "a" * 64 + ".com"}, "spec.docker.server", "at most 63"),
    ("server-too-long", {"docker__server": ".".join(["a" * 60] * 5)}, "spec.docker.server", "at most 253"),
    ("server-port-zero", {"docker__server": "example.com:0"}, "spec.docker.server", "from 1 to 65535"),
    ("server-port-big", {"docker__server": "example.com:65536"}, "spec.docker.server", "from 1 to 65535"),
    ("server-port-empty", {"docker__server": "example.com:"}, "spec.docker.server", "empty port"),
    ("server-port-letters", {"docker__server": "example.com:https"}, "spec.docker.server", "invalid port"),
    ("server-port-leading-zero", {"docker__server": "example.com:0443"}, "spec.docker.server", "leading zeros"),
    ("server-ipv6", {"docker__server": "[::1]:5000"}, "spec.docker.server", "IPv6"),
    ("server-two-colons", {"docker__server": "a:1:2"}, "spec.docker.server", "at most one"),
    ("server-only-port", {"docker__server": ":5000"}, "spec.docker.server", "host name before"),
    ("server-query", {"docker__server": "example.com?x=1"}, "spec.docker.server", "query"),
    ("server-not-string", {"docker__server": 42}, "spec.docker.server", "must be a string"),
    ("username-empty", {"docker__username": ""}, "spec.docker.username", "must not be empty"),
    ("username-blank", {"docker__username": "   "}, "spec.docker.username", "must not be empty"),
    ("username-missing", {"docker__username": None}, "spec.docker.username", "is required"),
    ("username-colon", {"docker__username": "a:b"}, "spec.docker.username", "must not contain ':'"),
    ("username-newline", {"docker__username": "a\nb"}, "spec.docker.username", "control characters"),
    ("username-too-long", {"docker__username": "u" * 1025}, "spec.docker.username", "at most 1024"),
    ("password-too-long", {"docker__password": "p" * 16385}, "spec.docker.password", "longer than 16384"),
    ("ns-list-too-long", {"namespaces": ",".join(["a" * 63] * 300)}, "spec.namespaces", "at most 16384"),
    ("password-empty", {"docker__password": ""}, "spec.docker.password", "must not be empty"),
    ("password-none", {"docker__password": None}, "spec.docker", "needs a password"),
    (
        "password-and-ref",
        {"docker__passwordSecretRef": {"name": "cred"}},
        "spec.docker",
        "give exactly one of password, passwordSecretRef or tokenFrom",
    ),
    (
        "ref-no-name",
        {"docker__password": None, "docker__passwordSecretRef": {"key": "password"}},
        "spec.docker.passwordSecretRef.name",
        "is required",
    ),
    (
        "ref-empty-name",
        {"docker__password": None, "docker__passwordSecretRef": {"name": ""}},
        "spec.docker.passwordSecretRef.name",
        "is required",
    ),
    (
        "ref-bad-name",
        {"docker__password": None, "docker__passwordSecretRef": {"name": "My_Secret"}},
        "spec.docker.passwordSecretRef.name",
        "not a valid DNS-1123 subdomain",
    ),
    (
        "ref-bad-key",
        {"docker__password": None, "docker__passwordSecretRef": {"name": "cred", "key": "pass word"}},
        "spec.docker.passwordSecretRef.key",
        "not a valid Secret data key",
    ),
    (
        "ref-empty-key",
        {"docker__password": None, "docker__passwordSecretRef": {"name": "cred", "key": ""}},
        "spec.docker.passwordSecretRef.key",
        "must not be empty",
    ),
    (
        "ref-dotdot-key",
        {"docker__password": None, "docker__passwordSecretRef": {"name": "cred", "key": ".."}},
        "spec.docker.passwordSecretRef.key",
        "not a valid Secret data key",
    ),
    (
        "ref-not-object",
        {"docker__password": None, "docker__passwordSecretRef": "cred"},
        "spec.docker.passwordSecretRef",
        "must be an object",
    ),
    ("ns-empty-item", {"namespaces": "a,,b"}, "spec.namespaces", "item 2 is empty"),
    ("ns-trailing-comma", {"namespaces": "a,b,"}, "spec.namespaces", "item 3 is empty"),
    ("ns-star-mixed", {"namespaces": "*,default"}, "spec.namespaces", '"*" must stand alone'),
    ("ns-upper", {"namespaces": "Default"}, "spec.namespaces", "upper case is not allowed"),
    ("ns-underscore", {"namespaces": "my_ns"}, "spec.namespaces", "underscores are not allowed"),
    ("ns-dot", {"namespaces": "a.b"}, "spec.namespaces", "not a valid DNS-1123 label"),
    ("ns-too-long", {"namespaces": "a" * 64}, "spec.namespaces", "at most 63"),
    ("ns-inner-space", {"namespaces": "a b"}, "spec.namespaces", "spaces are not allowed"),
    ("ns-glob", {"namespaces": "dev-*"}, "spec.namespaces", "not a valid DNS-1123 label"),
    ("ns-not-string", {"namespaces": ["a"]}, "spec.namespaces", "must be a string"),
    ("sa-empty-item", {"serviceAccounts": "default,"}, "spec.serviceAccounts", "item 2 is empty"),
    ("sa-star-mixed", {"serviceAccounts": "default,*"}, "spec.serviceAccounts", '"*" must stand alone'),
    ("sa-upper", {"serviceAccounts": "Builder"}, "spec.serviceAccounts", "upper case"),
    ("sa-underscore", {"serviceAccounts": "a_b"}, "spec.serviceAccounts", "underscores"),
    ("excluded-star", {"excludedNamespaces": "*"}, "spec.excludedNamespaces", '"*" is not allowed here'),
    ("excluded-bad", {"excludedNamespaces": "kube-system,,x"}, "spec.excludedNamespaces", "item 2 is empty"),
    ("excluded-upper", {"excludedNamespaces": "KUBE"}, "spec.excludedNamespaces", "upper case"),
    ("docker-missing", {"docker": None}, "spec.docker", "is required"),
    ("docker-not-object", {"docker": "x"}, "spec.docker", "must be an object"),
    ("selector-in-without-values", {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}},
     "spec.namespaceSelector.matchExpressions[0].values", "operator In needs at least one value"),
    ("selector-exists-with-values", {"namespaceSelector": {"matchExpressions": [
        {"key": "env", "operator": "Exists", "values": ["prod"]}]}},
     "spec.namespaceSelector.matchExpressions[0].values", "operator Exists takes no values"),
    ("selector-operator", {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Near",
                                                                       "values": ["prod"]}]}},
     "spec.namespaceSelector.matchExpressions[0].operator", "must be one of In, NotIn, Exists, DoesNotExist"),
    ("selector-key", {"namespaceSelector": {"matchExpressions": [{"key": "a/b/c", "operator": "Exists"}]}},
     "spec.namespaceSelector.matchExpressions[0].key", "label key 'a/b/c' is not valid"),
    ("selector-value", {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In",
                                                                    "values": ["prod", "-x"]}]}},
     "spec.namespaceSelector.matchExpressions[0].values[1]", "label value '-x' is not valid"),
    ("selector-label-key", {"namespaceSelector": {"matchLabels": {"Team_": "pay"}}},
     "spec.namespaceSelector.matchLabels", "label key 'Team_' is not valid"),
    ("selector-label-value", {"namespaceSelector": {"matchLabels": {"team": "pay ments"}}},
     "spec.namespaceSelector.matchLabels.team", "label value 'pay ments' is not valid"),
]


# ---- through the real API server --------------------------------------------------------------

CRD_NAME = "imagepullsecrets.tcr.tencentcloudcr.com"
TEST_LABEL = "tcr-addon.test/owner"


def chart_crd() -> dict[str, Any]:
    """The chart's CRD (crds/ file; templates/crd-imagepullsecrets.yaml renders the same on upgrade).

    Helm ownership metadata is replaced by a test label so no release adopts what a test created.
    """
    crd = load_crd()
    crd["metadata"] = {"name": CRD_NAME, "labels": {TEST_LABEL: "webhook-tests"}}
    return crd


def permissive_crd() -> dict[str, Any]:
    """The chart's CRD with every value constraint removed (types and required fields kept as is),
    so that only the webhook decides: used to check the webhook's own messages end to end."""
    crd = chart_crd()
    constraint_keys = {
        "x-kubernetes-validations",
        "pattern",
        "minLength",
        "maxLength",
        "enum",
        "required",
        "format",
        "minimum",
        "maxItems",
        "maxProperties",
        "default",
    }

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in constraint_keys}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        schema["properties"]["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        version["schema"] = strip(version["schema"])
    crd["metadata"]["labels"][TEST_LABEL] = "webhook-tests-permissive"
    return crd


def kubectl_json(*args: str, obj: Any, check: bool = False) -> subprocess.CompletedProcess[str]:
    """kubectl with ``obj`` as JSON on stdin (``-f -`` is appended)."""
    return kubectl(*args, "-f", "-", input_text=json.dumps(obj), check=check)


def labelled(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {}).setdefault("labels", {})[TEST_LABEL] = "webhook-tests"
    return obj


def crd_variant(crd: dict[str, Any]) -> str:
    return str(crd["metadata"]["labels"][TEST_LABEL])


def current_crd() -> dict[str, Any] | None:
    proc = kubectl("get", "crd", CRD_NAME, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(f"kubectl get crd failed: {proc.stderr}")
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def delete_crd() -> None:
    kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", "--timeout=120s")
    wait_for(lambda: current_crd() is None, timeout=120, what="CRD deletion")


@contextmanager
def installed_crd(crd: dict[str, Any], *, reuse_foreign: bool) -> Iterator[dict[str, Any]]:
    """Install ``crd`` for the duration; remove it afterwards if we installed it.

    A CRD installed by someone else (e.g. a Helm release of another suite) is reused when
    ``reuse_foreign`` (never modified nor deleted); the webhook suite runs on a control plane of
    its own, so finding one otherwise is an error.
    """
    existing = current_crd()
    owner = ((existing or {}).get("metadata", {}).get("labels") or {}).get(TEST_LABEL)
    if existing is not None and owner is None:
        if not reuse_foreign:
            raise AssertionError("the ImagePullSecret CRD is installed by someone else in this cluster")
        try:
            yield existing
        finally:
            kubectl("delete", "imagepullsecrets", "-l", TEST_LABEL, "--ignore-not-found", "--wait=false", check=False)
        return
    if existing is not None and owner != crd_variant(crd):
        delete_crd()
    kubectl_json("apply", obj=crd, check=True)
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # Discovery and the CRD handler catch up a moment after Established: wait until a list works.
    wait_for(
        lambda: kubectl("get", "imagepullsecrets", check=False).returncode == 0,
        timeout=60,
        what="ImagePullSecrets to be served",
    )
    try:
        yield crd
    finally:
        delete_crd()


CHART_DIR = Path(__file__).resolve().parents[2] / "chart"
CHART_WEBHOOK_TEMPLATE = "templates/webhook-validating-configuration.yaml"
CHART_WEBHOOK_NAME = "vimagepullsecret.tcr.tencentcloudcr.com"


def chart_webhook_configuration() -> dict[str, Any]:
    """The chart's ValidatingWebhookConfiguration as ``helm template`` renders it with default values."""
    import yaml

    proc = helm(
        "template",
        "tcr-addon",
        str(CHART_DIR),
        "--namespace",
        "tcr-assistant-system",
        "--show-only",
        CHART_WEBHOOK_TEMPLATE,
    )
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(docs) == 1, docs
    config: dict[str, Any] = docs[0]
    return config


def webhook_configuration(name: str, port: int, ca_pem: bytes) -> dict[str, Any]:
    """The chart's configuration, pointed at https://127.0.0.1:PORT with ``ca_pem`` (what the
    harness's post-renderer does), under the name ``name`` so that it never
    clobbers a real installation's."""
    config = chart_webhook_configuration()
    config["metadata"] = {"name": name, "labels": {TEST_LABEL: "webhook-tests"}}
    for hook in config["webhooks"]:
        hook["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}",
            "caBundle": base64.b64encode(ca_pem).decode(),
        }
    return config


@contextmanager
def registered_webhook(name: str, port: int, ca_pem: bytes) -> Iterator[dict[str, Any]]:
    """Register the configuration; always delete it afterwards (failurePolicy Fail would block later tests)."""
    config = webhook_configuration(name, port, ca_pem)
    kubectl_json("apply", obj=config, check=True)
    try:
        yield config
    finally:
        kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)
        # The API server drops the configuration a moment later (informer): until then a write could
        # still be sent to this (possibly stopped) server. Wait until writes go through again.
        probe = labelled(sample(f"probe-{uuid.uuid4().hex[:6]}"))
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: kubectl_json("create", "--dry-run=server", obj=probe).returncode == 0,
                timeout=30,
                interval=0.2,
                what="the webhook configuration to be forgotten",
            )


def wait_until_consulted(server: WebhookServer, probe: dict[str, Any]) -> None:
    """Wait until the API server calls ``server`` (its webhook informer picks configurations up asynchronously)."""

    def consulted() -> bool:
        before = server.reviews
        kubectl_json("create", "--dry-run=server", obj=probe)
        return server.reviews > before

    wait_for(consulted, timeout=60, interval=0.2, what="the API server to call the webhook")


@contextmanager
def stopped_webhook(cert_dir: Path, ca_name: str) -> Iterator[None]:
    """A webhook the API server has been seen calling, then stopped: its configuration stays registered."""
    ca = CertificateAuthority(ca_name)
    write_pair(cert_dir, loopback_pair(ca))
    server = WebhookServer("127.0.0.1", 0, cert_dir)
    server.start()
    try:
        with registered_webhook(f"tcr-webhook-down-{uuid.uuid4().hex[:6]}", server.port, ca.cert_pem):
            wait_until_consulted(server, labelled(sample(f"probe-{uuid.uuid4().hex[:6]}")))
            server.stop()
            yield
    finally:
        server.stop()


class Webhook:
    """A running WebhookServer registered with the API server under ``name``."""

    def __init__(self, server: WebhookServer, name: str, ca: CertificateAuthority, cert_dir: Path) -> None:
        self.server, self.name, self.ca, self.cert_dir = server, name, ca, cert_dir

    @property
    def webhook_name(self) -> str:
        return CHART_WEBHOOK_NAME


@contextmanager
def running_webhook(cert_dir: Path) -> Iterator[Webhook]:
    """Start a WebhookServer on 127.0.0.1 (fresh CA, IP SAN) and register it; undo both afterwards."""
    ca = CertificateAuthority("tcr-addon-webhook-apiserver-ca")
    write_pair(cert_dir, loopback_pair(ca))
    name = f"tcr-webhook-test-{uuid.uuid4().hex[:6]}"
    with WebhookServer("127.0.0.1", 0, cert_dir) as server, registered_webhook(name, server.port, ca.cert_pem):
        wait_until_consulted(server, labelled(sample(f"probe-{uuid.uuid4().hex[:6]}")))
        yield Webhook(server, name, ca, cert_dir)
