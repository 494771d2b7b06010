"""The node promise for minted credentials: nobody writes a password. The controller (a Pod on
the node) mints each token from the TCR API stand-in (listening inside the node's network, HTTPS
from the registry's CA, TC3 signatures checked) with an API key from a labelled Secret, and the
registry accepts exactly the tokens the stand-in says are valid. With temp tokens that live
LIFETIME seconds:

1. a new namespace's Deployment pulls the private image with the first minted token;
2. after the first token has expired, and the registry refuses it, a new Pod still pulls (the
   controller renewed it at half its lifetime and distributed the new one);
3. with the stand-in refusing to mint, the current token stays, TokenMinted says why (and a
   Warning Event), and a new Pod still pulls until the token's own expiry.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import secrets
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import addon, node, oci, registry
from harness.tcr_standin import (
    INSTANCE,
    REGION,
    SECRET_ID,
    SECRET_KEY,
    TcrStandIn,
    bound_in_netns,
    serving,
    socket_in_netns,
)
from node_support import deployment, pull_failure, ready, tcr_like_registry
from support import kubectl, wait_for

pytestmark = pytest.mark.promise

NAMESPACE = addon.NAMESPACE
IPS_NAME = "minted"
SECRET = f"tcr.ips{IPS_NAME}"
REPOSITORY = "team/minted"
LIFETIME = 40.0  # seconds a temp token lives (renewed after half of it)
API_PORT = 8443


@dataclass
class Minted:
    registry: registry.PrivateRegistry
    api: TcrStandIn
    directory: Path
    netns: str

    def push(self, tag: str) -> str:
        image = oci.private_test_image(self.directory / f"{tag}.tar", f"{self.registry.hostname}/{REPOSITORY}:{tag}",
                                       nonce=secrets.token_hex(16))
        self.registry.push(image.archive, REPOSITORY, tag, via=self.registry.listen)
        return image.ref


def registry_status(minted: Minted, username: str, token: str) -> int:
    """What the registry answers ``GET /v2/`` with this credential, asked from inside the node's
    network (where its address is; on the host it names another listener)."""
    reg = minted.registry
    sock = socket_in_netns(minted.netns)
    sock.settimeout(10)
    sock.connect((reg.listen_host, reg.port))
    context = ssl.create_default_context(cafile=str(reg.ca_file))
    connection = http.client.HTTPSConnection(reg.hostname, reg.port, context=context)
    connection.sock = context.wrap_socket(sock, server_hostname=reg.hostname)
    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    try:
        connection.request("GET", "/v2/", headers={"Authorization": f"Basic {auth}"})
        return connection.getresponse().status
    finally:
        connection.close()


def distributed(namespace: str) -> tuple[str, str]:
    """(user, token) of our Secret in ``namespace``."""
    raw = kubectl("-n", namespace, "get", "secret", SECRET, "-o", "jsonpath={.data.\\.dockerconfigjson}").stdout
    auth = next(iter(json.loads(base64.b64decode(raw))["auths"].values()))
    return str(auth["username"]), str(auth["password"])


def condition(kind: str) -> dict[str, str]:
    status = json.loads(kubectl("get", "ipss", IPS_NAME, "-o", "json").stdout).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def run_pod(minted: Minted, namespace: str, app: str, tag: str) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", input_text=deployment(app, minted.push(tag)))
    wait_for(lambda: ready(namespace, app), timeout=180, interval=0.2,
             what=f"{app} in {namespace} Ready (last pull error: {pull_failure(namespace, app)})")


@pytest.fixture(scope="module")
def minted(node_cluster: node.NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Minted]:
    directory = Path(tmp_path_factory.mktemp("minted"))
    with tcr_like_registry(node_cluster, directory, "pusher", "tcr-addon-minted-ca") as private:
        # From now on the registry accepts the tokens the stand-in issues while they are valid, and
        # the test's own pusher (never given to the cluster).
        api = TcrStandIn(fixed_token=None, token_lifetime=LIFETIME, registry=private,
                         other_users={private.username: private.password})
        api.sync_registry()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = private.ca.issue(node.SERVICE_HOST_IP, ip_addresses=(node.SERVICE_HOST_IP,),
                                     server=True).write(directory, "tcr-api")
        context.load_cert_chain(cert, key)
        assert node_cluster.namespaces is not None, "the node runs in namespaces of its own"
        sock = bound_in_netns(str(node_cluster.namespaces.netns), node.SERVICE_HOST_IP, API_PORT)
        with serving(api, tls=context, sock=sock):
            kubectl("create", "namespace", NAMESPACE, check=False)
            kubectl("-n", NAMESPACE, "create", "secret", "generic", "tcr-api-key",
                    f"--from-literal=secretId={SECRET_ID}", f"--from-literal=secretKey={SECRET_KEY}")
            kubectl("-n", NAMESPACE, "label", "secret", "tcr-api-key", "tcr.tencentcloudcr.com/credential-source=true")
            values = directory / "values.yaml"
            values.write_text(yaml.safe_dump({
                "global": {
                    "imagePullSecretsCrs": [{"name": IPS_NAME, "dockerServer": private.hostname, "dockerTokenFrom": {
                        "tcr": {"instanceId": INSTANCE, "region": REGION, "endpoint": api.address,
                                "apiKeySecretRef": {"name": "tcr-api-key"}}}}],
                    "hosts": [{"domain": private.hostname, "ip": node.SERVICE_HOST_IP}]},
                "controller": {"registryCheck": {"caBundle": private.ca_file.read_text()}}}))
            release = addon.NodeRelease(node_cluster, values_files=[values], set_values=["hostsUpdater.interval=2"])
            release.install()
            try:
                yield Minted(private, api, directory, str(node_cluster.namespaces.netns))
            finally:
                with contextlib.suppress(addon.AddonError):
                    release.uninstall()
                kubectl("-n", NAMESPACE, "delete", "secret", "tcr-api-key", "--ignore-not-found", check=False)
        assert api.problems == []


def test_a_minted_token_pulls_and_is_renewed_before_it_expires(minted: Minted) -> None:
    wait_for(lambda: condition("TokenMinted").get("status") == "True", timeout=60, what="the first token minted")
    spec = json.loads(kubectl("get", "ipss", IPS_NAME, "-o", "json").stdout)["spec"]["docker"]
    assert "password" not in spec and "passwordSecretRef" not in spec and "username" not in spec
    namespace = f"minted-{secrets.token_hex(3)}"
    kubectl("create", "namespace", namespace)
    wait_for(lambda: SECRET in kubectl("-n", namespace, "get", "serviceaccount", "default", "-o",
                                       "jsonpath={.imagePullSecrets[*].name}", check=False).stdout,
             timeout=60, what=f"default in {namespace} linked")
    first_user, first_token = distributed(namespace)
    first = next(t for t in minted.api.issued if t.username == first_user)
    first_expiry = first.expires_at
    assert first.token == first_token and first_expiry is not None
    run_pod(minted, namespace, "app1", "v1")
    print("\n" + kubectl("get", "ipss", IPS_NAME, "-o", "wide").stdout)

    # The first token lapses; the registry refuses it; a new Pod pulls with its successor.
    wait_for(lambda: time.time() > first_expiry + 1, timeout=LIFETIME + 10, what="the first token's expiry")
    wait_for(lambda: registry_status(minted, first_user, first_token) == 401, timeout=20,
             what="the registry refusing the expired token")
    user, token = distributed(namespace)
    assert (user, token) != (first_user, first_token)
    assert registry_status(minted, user, token) == 200
    run_pod(minted, namespace, "app2", "v2")
    expires = json.loads(kubectl("get", "ipss", IPS_NAME, "-o", "json").stdout)["status"]["tokenExpiresAt"]
    assert expires.endswith("Z")


def test_a_refused_mint_keeps_the_token_until_its_expiry(minted: Minted) -> None:
    namespace = kubectl("get", "namespaces", "-o", "name").stdout.split("namespace/minted-")[1].split()[0]
    namespace = f"minted-{namespace}"
    minted.api.mint_refusal = "InternalError"
    try:
        user, token = distributed(namespace)
        held = next(t for t in minted.api.issued if t.username == user)
        wait_for(lambda: condition("TokenMinted").get("status") == "False", timeout=LIFETIME,
                 what="TokenMinted False after the refused renewal")
        refused = condition("TokenMinted")
        assert refused["reason"] == "MintFailed" and "stays" in refused["message"], refused
        assert distributed(namespace) == (user, token), "the current token stays in place"
        assert held.expires_at is not None and time.time() < held.expires_at - 5, "time left to pull"
        run_pod(minted, namespace, "app3", "v3")
        assert time.time() < held.expires_at, "pulled with the token still valid"
        events = kubectl("get", "events", "-A", "--field-selector", "reason=TokenMintMintFailed", "-o", "name").stdout
        assert events.strip(), "a Warning Event names the failure"
        print("\n" + kubectl("get", "ipss", IPS_NAME, "-o", "wide").stdout)
    finally:
        minted.api.mint_refusal = None
    wait_for(lambda: condition("TokenMinted").get("status") == "True", timeout=60,
             what="TokenMinted True again once the API mints")
