"""Credentials: an ImagePullSecret author may read only Secrets marked as credential sources, and the
chart keeps every password out of the custom resources.

Actors: an ImagePullSecret author (may create ImagePullSecrets, may read the namespaces they target,
may not read the add-on's namespace) and anyone who may read ImagePullSecrets (a GitOps UI, an
auditor). Each test performs the attack on the real API server and asserts the refusal.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_support import ADDON_NS, K, RunningController
from security_support import as_user, uid
from webhook_support import labelled, loopback_pair, registered_webhook, sample, wait_until_consulted, write_pair

from harness.pki import CertificateAuthority
from support import REPO_ROOT, helm, kubectl, wait_for
from tcr_assistant.admission.credentials import CredentialLookup
from tcr_assistant.admission.server import WEBHOOK_PATH, WebhookServer
from tcr_assistant.k8s.client import SECRETS
from tcr_assistant.spec import api

# Version-dependent: metadata-only reads (PartialObjectMetadata), --dry-run=server lookups in the chart's notes.
pytestmark = pytest.mark.compat

AUTHOR = "ips-author"
READER = "ips-reader"
CA_KEY_PEM = "-----BEGIN EC PRIVATE KEY-----\nnot-a-real-key-but-secret\n-----END EC PRIVATE KEY-----\n"


@pytest.fixture
def credential_checking_webhook(controller: RunningController, tmp_path: Path) -> Iterator[WebhookServer]:
    """The controller's ImagePullSecret webhook (with its passwordSecretRef check), registered."""
    ca = CertificateAuthority("tcr-addon-security-credentials-ca")
    write_pair(tmp_path, loopback_pair(ca))
    routes = {WEBHOOK_PATH: CredentialLookup(controller.controller.kube, controller.controller.state,
                                             controller.controller.opts.namespace).review}
    with WebhookServer("127.0.0.1", 0, tmp_path, routes=routes) as server, \
            registered_webhook(f"tcr-security-credentials-{uid()}", server.port, ca.cert_pem):
        wait_until_consulted(server, labelled(sample(f"probe-{uid()}")))
        yield server


@pytest.fixture
def author_rbac() -> Iterator[None]:
    """AUTHOR may write ImagePullSecrets (nothing else); READER may only read them."""
    objects: list[dict[str, Any]] = []
    for user, verbs in ((AUTHOR, ["get", "list", "create", "update", "patch"]), (READER, ["get", "list", "watch"])):
        name = f"tcr-security-{user}"
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": [{"apiGroups": [api.GROUP], "resources": [api.PLURAL], "verbs": verbs}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
        ]
    document = yaml.safe_dump_all(objects)
    kubectl("apply", "-f", "-", input_text=document)
    yield
    kubectl("delete", "--ignore-not-found", "-f", "-", input_text=document, check=False)


def ips_reading(name: str, target: str, secret: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
        "spec": {"namespaces": target, "docker": {
            "server": "attacker.tencentcloudcr.com", "username": "u",
            "passwordSecretRef": {"name": secret, "key": key}}},
    }


def foreign_secrets(k: K) -> dict[str, str]:
    """Secrets of the add-on's namespace that are not credentials: what an attacker wants copied out.
    Name -> the data key worth stealing."""
    cert, release = f"webhook-cert-{uid()}", f"sh.helm.release.v1.tcr-addon-{uid()}.v1"
    k.create_credential_secret(cert, {"ca.key": CA_KEY_PEM, "tls.crt": "c", "tls.key": "k"}, marked=False)
    k.create_credential_secret(release, {"release": "H4sI-every-inline-password"}, marked=False,
                               secret_type="helm.sh/release.v1")
    return {cert: "ca.key", release: "release"}


def distributed(k: K, namespace: str, ips: str) -> dict[str, Any] | None:
    return k.secret(namespace, api.secret_name(ips))


def test_a_reference_to_an_unmarked_secret_is_refused_by_the_webhook(
    k: K, credential_checking_webhook: WebhookServer, author_rbac: None
) -> None:
    target = k.create_namespace()
    for secret, key in foreign_secrets(k).items():
        proc = as_user(AUTHOR, "create", "-f", "-", obj=ips_reading(f"steal-{uid()}", target, secret, key))
        assert proc.returncode != 0, f"an author made the controller read {secret!r}"
        assert "spec.docker.passwordSecretRef.name" in proc.stderr, proc.stderr
        assert "is not marked as a credential source" in proc.stderr, proc.stderr
        assert f"kubectl label secret {secret} -n {ADDON_NS} {api.LABEL_CREDENTIAL_SOURCE}=true" in proc.stderr
        assert CA_KEY_PEM.splitlines()[1] not in proc.stderr


def test_a_marked_secret_is_accepted_and_a_missing_one_is_warned_about(
    k: K, credential_checking_webhook: WebhookServer, author_rbac: None, ips_cleanup: list[str]
) -> None:
    target = k.create_namespace()
    marked, missing = f"cred-{uid()}", f"later-{uid()}"
    k.create_credential_secret(marked, {"password": "pw-marked"})
    name = f"ok-{uid()}"
    ips_cleanup.append(name)
    proc = as_user(AUTHOR, "create", "-f", "-", obj=ips_reading(name, target, marked, "password"))
    assert proc.returncode == 0, proc.stderr
    later = f"later-{uid()}"
    ips_cleanup.append(later)
    proc = as_user(AUTHOR, "create", "-f", "-", obj=ips_reading(later, target, missing, "password"))
    assert proc.returncode == 0, proc.stderr
    assert f'Secret "{missing}" does not exist in namespace "{ADDON_NS}" yet' in proc.stderr, proc.stderr


def test_the_controller_never_copies_an_unmarked_secret(k: K, controller: RunningController,
                                                        ips_cleanup: list[str]) -> None:
    """The webhook can be bypassed (not installed, or the Secret appears after admission): the
    controller itself reads marked Secrets only, and says so in the status."""
    target = k.create_namespace()
    k.wait_default_sa(target)
    for secret, key in foreign_secrets(k).items():
        name = f"steal-{uid()}"
        ips_cleanup.append(name)
        k.kube.request("POST", f"/apis/{api.API_VERSION}/{api.PLURAL}", body=ips_reading(name, target, secret, key))

        def refused(name: str = name) -> str | None:
            conditions = ((k.ips(name) or {}).get("status") or {}).get("conditions") or []
            ready = next((c for c in conditions if c["type"] == "Ready"), None)
            return ready["message"] if ready and ready["reason"] == "CredentialsUnavailable" else None

        message = wait_for(refused, what=f"Ready=False for a reference to {secret}")
        assert f"label it {api.CREDENTIAL_SOURCE_SELECTOR}" in message, message
        assert distributed(k, target, name) is None, f"the controller copied {secret!r} into {target}"
        assert api.secret_name(name) not in k.pull_secrets(target)
    # Marking a Secret is what lets a reference read it: the same reference then works.
    good = f"cred-{uid()}"
    name = f"marked-{uid()}"
    ips_cleanup.append(name)
    k.kube.request("POST", f"/apis/{api.API_VERSION}/{api.PLURAL}", body=ips_reading(name, target, good, "password"))
    k.create_credential_secret(good, {"password": "pw-good"})
    wait_for(lambda: distributed(k, target, name) is not None, what="the marked Secret's password distributed")
    published = json.dumps([[*k.events_for(ips), k.ips(ips)] for ips in ips_cleanup])
    assert CA_KEY_PEM.splitlines()[1] not in published and "pw-good" not in published


def rendered_chart(values: Path) -> list[dict[str, Any]]:
    """The chart's ImagePullSecrets and the Secrets they read, as `helm template` renders them."""
    proc = helm("template", "tcr-addon", str(REPO_ROOT / "chart"), "--namespace", ADDON_NS, "-f", str(values))
    wanted = (api.KIND, "Secret")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc and doc["kind"] in wanted
            and (doc["kind"] == api.KIND or doc["metadata"]["name"] == "tcr-assistant-registry-credentials")]


def test_passwords_given_in_values_are_not_readable_from_the_custom_resources(
    k: K, controller: RunningController, author_rbac: None, tmp_path: Path, ips_cleanup: list[str]
) -> None:
    """TKE-style values with inline passwords: the chart puts them in a Secret of its own, so whoever
    may read ImagePullSecrets (and audit logs or GitOps diffs of them) sees no password, while the
    namespaces still get working pull Secrets."""
    target = k.create_namespace()
    k.wait_default_sa(target)
    passwords = {f"tcr-{uid()}-vpc": f"jwt-{uuid.uuid4().hex}", f"tcr-{uid()}-public": f"jwt-{uuid.uuid4().hex}"}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"global": {"imagePullSecretsCrs": [
        {"name": name, "namespaces": target, "serviceAccounts": "*", "type": "docker",
         "dockerServer": "example.tencentcloudcr.com", "dockerUsername": "100012345678", "dockerPassword": password}
        for name, password in passwords.items()]}}))
    documents = rendered_chart(values)
    ips_cleanup.extend(passwords)
    try:
        kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(documents))
        for name, password in passwords.items():
            secret = wait_for(functools.partial(distributed, k, target, name), what=f"{name} distributed")
            dockerconfig = base64.b64decode(secret["data"][api.SECRET_KEY]).decode()
            assert password in dockerconfig
            seen = as_user(READER, "get", api.CRD_NAME, name, "-o", "json")
            assert seen.returncode == 0, seen.stderr
            assert password not in seen.stdout, f"a reader of ImagePullSecrets sees {name}'s password"
            assert json.loads(seen.stdout)["spec"]["docker"]["passwordSecretRef"]["key"] == name
        refused = as_user(READER, "get", "secret", "tcr-assistant-registry-credentials", "-n", ADDON_NS)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
    finally:
        with contextlib.suppress(Exception):
            k.kube.delete(SECRETS.path(ADDON_NS, "tcr-assistant-registry-credentials"))


def test_an_unmarked_secret_named_in_values_is_reported_at_install(k: K, tmp_path: Path) -> None:
    """A values author who names an existing Secret that is not marked learns it from helm itself
    (the chart's notes read the Secret's labels), instead of from a Ready=False later on."""
    unmarked, marked = f"tcr-old-{uid()}", f"tcr-new-{uid()}"
    k.create_credential_secret(unmarked, {"password": "pw"}, marked=False)
    k.create_credential_secret(marked, {"password": "pw"})
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"global": {"imagePullSecretsCrs": [
        {"name": f"ips-{secret}", "type": "docker", "dockerServer": "example.tencentcloudcr.com",
         "dockerUsername": "robot", "dockerPasswordSecret": {"name": secret}} for secret in (unmarked, marked)]}}))
    proc = helm("install", f"notes-{uid()}", str(REPO_ROOT / "chart"), "--namespace", ADDON_NS, "-f", str(values),
                "--dry-run=server")
    assert f"WARNING: Secret {unmarked} (dockerPasswordSecret of ips-{unmarked}) is not marked" in proc.stdout
    assert f"kubectl -n {ADDON_NS} label secret {unmarked} {api.CREDENTIAL_SOURCE_SELECTOR}" in proc.stdout
    assert f"Secret {marked} " not in proc.stdout
