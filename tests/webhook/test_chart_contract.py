"""The chart's ValidatingWebhookConfiguration matches what the webhook serves.

Rendered offline with ``helm template``; the through-the-API-server tests register this same
rendered configuration (pointed at 127.0.0.1), so what is checked here is what they exercise.
"""

from __future__ import annotations

from typing import Any

import pytest
from webhook_support import chart_webhook_configuration

from tcr_assistant.admission.server import WEBHOOK_PATH


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return chart_webhook_configuration()


def test_configuration_name_and_single_webhook(config: dict[str, Any]) -> None:
    assert config["kind"] == "ValidatingWebhookConfiguration"
    assert config["metadata"]["name"] == "tcr-assistant-validating-webhook-configuration"
    assert len(config["webhooks"]) == 1


def test_matches_only_our_group_and_resource(config: dict[str, Any]) -> None:
    (hook,) = config["webhooks"]
    for rule in hook["rules"]:
        assert rule["apiGroups"] == ["tcr.tencentcloudcr.com"]
        assert rule["apiVersions"] == ["v1"]
        assert rule["resources"] == ["imagepullsecrets"]  # not imagepullsecrets/status, nor "*"
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}


def test_admission_settings(config: dict[str, Any]) -> None:
    (hook,) = config["webhooks"]
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["failurePolicy"] == "Fail"
    assert 1 <= hook["timeoutSeconds"] <= 10


def test_points_at_the_webhook_service_path(config: dict[str, Any]) -> None:
    (hook,) = config["webhooks"]
    service = hook["clientConfig"]["service"]
    assert service["name"] == "tcr-assistant-webhook-service"
    assert service["namespace"] == "tcr-assistant-system"
    assert service["path"] == WEBHOOK_PATH
    # Set at run time (by the controller, or by cert-manager's cainjector), never rendered.
    assert "caBundle" not in hook["clientConfig"]
