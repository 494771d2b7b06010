"""The local control plane is real: controller-manager, namespace lifecycle, GC, RBAC with tokens."""

from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness import cluster
from support import kubectl, wait_for

pytestmark = pytest.mark.compat


def _service_account_exists(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_service_account(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_new_namespace_gets_default_service_account(kube: client.ApiClient, test_namespace: str) -> None:
    core = client.CoreV1Api(kube)
    wait_for(lambda: _service_account_exists(core, test_namespace, "default"), timeout=30,
             what=f"ServiceAccount default in {test_namespace}")


def test_deleted_namespace_disappears(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content")))
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=60, what=f"namespace {name} to be finalized and removed")


def test_owned_object_is_garbage_collected(kube: client.ApiClient, test_namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(
        test_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    assert owner.metadata is not None and owner.metadata.uid
    reference = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        test_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owned", owner_references=[reference])))
    core.delete_namespaced_config_map("owner", test_namespace)

    def collected() -> bool:
        try:
            core.read_namespaced_config_map("owned", test_namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(collected, timeout=60, what="the garbage collector to delete the owned ConfigMap")


def test_service_account_token_carries_exactly_its_rbac(
    kube: client.ApiClient, control_plane: cluster.ControlPlane, test_namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account(
        test_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader")))
    status = core.create_namespaced_service_account_token(
        "reader", test_namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status
    assert status is not None
    token = status.token

    configuration = client.Configuration()
    configuration.host = control_plane.server
    configuration.ssl_ca_cert = str(control_plane.directory / "pki" / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CoreV1Api(client.ApiClient(configuration))

    try:
        as_reader.list_namespaced_config_map(test_namespace)
    except ApiException as error:
        assert error.status == 403, error
    else:
        raise AssertionError("a ServiceAccount with no RBAC was allowed to list ConfigMaps")

    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(test_namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="read-configmaps"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])]))
    rbac.create_namespaced_role_binding(test_namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="read-configmaps"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=test_namespace)]))

    def allowed() -> bool:
        try:
            as_reader.list_namespaced_config_map(test_namespace)
        except ApiException as error:
            if error.status == 403:
                return False
            raise
        return True

    wait_for(allowed, timeout=10, what="the RoleBinding to take effect")
    # The grant is exactly that Role: other verbs and namespaces stay forbidden.
    try:
        as_reader.list_namespaced_config_map("default")
    except ApiException as error:
        assert error.status == 403
    else:
        raise AssertionError("the Role in one namespace granted access to another")


def test_kubectl_and_server_report_pinned_version(control_plane: cluster.ControlPlane) -> None:
    from harness import tools

    version = yaml.safe_load(kubectl("version", "-o", "yaml").stdout)
    # The client is always the newest kubectl; the server is the minor this run chose.
    assert version["clientVersion"]["gitVersion"] == tools.KUBERNETES_VERSION
    assert version["serverVersion"]["gitVersion"] == tools.kubernetes_release(tools.kubernetes_minor())
    assert control_plane.kubernetes == tools.kubernetes_minor()
