"""A namespace admin (the built-in `admin` ClusterRole, bound in one namespace): may opt its
ServiceAccounts out and keep its own pull Secrets; must not choose to be served by an
ImagePullSecret meant for others, nor make the controller drop what is theirs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import yaml
from controller_support import K, RunningController
from security_support import as_user, uid

from support import kubectl, wait_for
from tcr_assistant.spec import api

NAMESPACE_ADMIN = "namespace-admin"


def as_admin_of_namespace(*args: str) -> subprocess.CompletedProcess[str]:
    return as_user(NAMESPACE_ADMIN, *args)


@pytest.fixture
def tenant(k: K) -> Iterator[str]:
    """A namespace whose admin is NAMESPACE_ADMIN."""
    namespace = k.create_namespace()
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tenant-admin", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": NAMESPACE_ADMIN}]}
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump(binding))
    k.wait_default_sa(namespace)
    yield namespace


def test_a_namespace_admin_cannot_label_itself_into_another_teams_registry(
    k: K, controller: RunningController, tenant: str, ips_cleanup: list[str]
) -> None:
    name = f"payments-{uid()}"
    ips_cleanup.append(name)
    k.create_ips(name, {"namespaces": "*", "namespaceSelector": {"matchLabels": {"team": "payments"}},
                        "docker": {"server": "payments.tencentcloudcr.com", "username": "u", "password": "pw"}})
    for verb in (["label", "namespace", tenant, "team=payments"],
                 ["annotate", "namespace", tenant, f"{api.OPT_OUT_ANNOTATION}=false"]):
        proc = as_admin_of_namespace(*verb)
        assert proc.returncode != 0, f"a namespace admin could {verb[0]} its namespace"
        assert 'cannot patch resource "namespaces"' in proc.stderr, proc.stderr
    controller.settle()
    assert k.secret(tenant, api.secret_name(name)) is None
    assert api.secret_name(name) not in k.pull_secrets(tenant)


def test_a_namespace_admin_keeps_its_own_entries_and_its_opt_out(
    k: K, controller: RunningController, tenant: str, ips_cleanup: list[str]
) -> None:
    name = f"shared-{uid()}"
    ours = api.secret_name(name)
    ips_cleanup.append(name)
    k.create_ips(name, {"namespaces": tenant,
                        "docker": {"server": "shared.tencentcloudcr.com", "username": "u", "password": "pw"}})
    wait_for(lambda: ours in k.pull_secrets(tenant), what="the default ServiceAccount linked")
    # The admin's own pull Secret and entries, replacing ours on one account and opting out another.
    created = as_admin_of_namespace("-n", tenant, "create", "secret", "docker-registry", "team-registry",
                                    "--docker-server=team.example.com", "--docker-username=t", "--docker-password=p")
    assert created.returncode == 0, created.stderr
    before = k.secret(tenant, "team-registry")
    patch = '{"imagePullSecrets": [{"name": "team-registry"}, {"name": "team-mirror"}]}'
    replaced = as_admin_of_namespace("-n", tenant, "patch", "serviceaccount", "default", "-p", patch)
    assert replaced.returncode == 0, replaced.stderr
    builder = as_admin_of_namespace("-n", tenant, "create", "serviceaccount", "builder")
    assert builder.returncode == 0, builder.stderr
    wait_for(lambda: ours in k.pull_secrets(tenant, "builder"), what="the new account linked")
    opt_out = f"{api.OPT_OUT_ANNOTATION}=true"
    opted = as_admin_of_namespace("-n", tenant, "annotate", "serviceaccount", "builder", opt_out)
    assert opted.returncode == 0, opted.stderr
    # Ours comes back on the default account, after theirs, which keep their order; the opted-out
    # account loses ours only; their Secret is not touched.
    expected = ["team-registry", "team-mirror", ours]
    wait_for(lambda: k.pull_secrets(tenant) == expected, what="ours relinked after theirs")
    wait_for(lambda: ours not in k.pull_secrets(tenant, "builder"), what="the opt-out honoured")
    controller.settle()
    assert k.pull_secrets(tenant) == expected
    after = k.secret(tenant, "team-registry")
    assert before is not None and after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
