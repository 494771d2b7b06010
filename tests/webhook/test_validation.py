"""Unit tests of tcr_assistant.spec.validation: every rule, by field, with its message."""

from __future__ import annotations

from typing import Any

import pytest
from webhook_support import BAD_CASES, SEED_SAMPLE, sample

from tcr_assistant.spec.validation import (
    MAX_NAME_LENGTH,
    FieldError,
    parse_name_list_strict,
    validate_image_pull_secret,
    validate_server,
    validate_spec,
)

PASSWORD = "s3cr3t-PASSWORD-never-shown"


def errors_of(obj: dict[str, Any]) -> list[FieldError]:
    return validate_image_pull_secret(obj)


def test_seed_sample_is_valid() -> None:
    assert errors_of(SEED_SAMPLE) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"namespaces": ""},
        {"namespaces": "default"},
        {"namespaces": "a,b,c"},
        {"namespaces": "a, b ,  c"},
        {"namespaces": " * "},
        {"namespaces": None},
        {"serviceAccounts": "default,builder.bot"},
        {"serviceAccounts": ""},
        {"excludedNamespaces": "kube-system, kube-public"},
        {"excludedNamespaces": ""},
        {"docker__server": "example.tencentcloudcr.com:443"},
        {"docker__server": "registry:5000"},
        {"docker__server": "localhost"},
        {"docker__server": "10.0.0.1:65535"},
        {"docker__server": "a" * 63 + ".com"},
        {"docker__password": None, "docker__passwordSecretRef": {"name": "cred"}},
        {"docker__password": None, "docker__passwordSecretRef": {"name": "cred", "key": "token.v1_X-y"}},
        {"docker__password": "", "docker__passwordSecretRef": {"name": "cred"}},
        {"docker__username": "tcr$robot"},
    ],
)
def test_valid_variants(changes: dict[str, Any]) -> None:
    assert errors_of(sample(**changes)) == []


@pytest.mark.parametrize(("changes", "field", "fragment"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_spec_is_refused_with_field_and_message(changes: dict[str, Any], field: str, fragment: str) -> None:
    obj = sample(**changes)
    if "docker__password" not in changes and isinstance(obj["spec"].get("docker"), dict):
        obj["spec"]["docker"].setdefault("password", PASSWORD)
        if obj["spec"]["docker"].get("password") == "tcr.jwt.token":
            obj["spec"]["docker"]["password"] = PASSWORD
    errors = errors_of(obj)
    assert errors, f"expected a refusal for {changes}"
    fields = [e.field for e in errors]
    assert field in fields, errors
    message = next(e.message for e in errors if e.field == field)
    assert fragment in message, message
    for error in errors:
        assert PASSWORD not in error.message
        assert PASSWORD not in str(error)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH}"),
        ("UPPER", "not a valid DNS-1123 subdomain"),
        ("under_score", "not a valid DNS-1123 subdomain"),
        ("trailing-", "not a valid DNS-1123 subdomain"),
        ("dot.", "not a valid DNS-1123 subdomain"),
        ("-dash", "not a valid DNS-1123 subdomain"),
        (".dot", "not a valid DNS-1123 subdomain"),
    ],
)
def test_name_must_give_a_valid_secret_name(name: str, fragment: str) -> None:
    errors = errors_of(sample(name=name))
    assert [e.field for e in errors] == ["metadata.name"]
    assert fragment in errors[0].message
    assert "tcr.ips" in errors[0].message


def test_longest_name_is_valid() -> None:
    # "tcr.ips" + name must fit 253 characters, with dot-separated parts of at most 63.
    name = ".".join(["a" * 100, "b" * (MAX_NAME_LENGTH - 101)])
    assert len(name) == MAX_NAME_LENGTH
    assert errors_of(sample(name=name)) == []
    assert len("tcr.ips" + name) == 253


def test_name_parts_may_exceed_63_characters() -> None:
    # Kubernetes object names (Secrets included) limit the whole name, not each dot-separated part.
    assert errors_of(sample(name="a" * 100 + "." + "b" * 100)) == []


def test_generate_name_is_checked_with_room_for_the_suffix() -> None:
    obj = sample()
    obj["metadata"] = {"generateName": "ips-"}
    assert errors_of(obj) == []
    obj["metadata"] = {"generateName": "a" * MAX_NAME_LENGTH}
    assert [e.field for e in errors_of(obj)] == ["metadata.generateName"]
    obj["metadata"] = {}
    assert [e.field for e in errors_of(obj)] == ["metadata.name"]


def test_missing_spec_and_garbage_shapes() -> None:
    obj = sample()
    del obj["spec"]
    assert [e.field for e in errors_of(obj)] == ["spec"]
    assert [e.field for e in validate_spec([])] == ["spec"]  # type: ignore[arg-type]
    assert validate_image_pull_secret("x")  # type: ignore[arg-type]
    obj = sample()
    obj["metadata"] = "x"
    assert [e.field for e in errors_of(obj)] == ["metadata.name"]


def test_several_problems_are_all_reported() -> None:
    obj = sample(namespaces="a,,b", docker__server="https://x", docker__username="")
    fields = {e.field for e in errors_of(obj)}
    assert fields == {"spec.namespaces", "spec.docker.server", "spec.docker.username"}


def test_unknown_fields_are_ignored() -> None:
    # The CRD's structural schema prunes unknown fields before admission; the webhook ignores them.
    obj = sample(docker__email="x@example.com", somethingNew=True)
    assert errors_of(obj) == []


def test_password_value_never_in_messages_whatever_the_field() -> None:
    obj = sample(
        namespaces=PASSWORD,
        docker__password=PASSWORD,
        docker__passwordSecretRef={"name": PASSWORD, "key": PASSWORD + " "},
        docker__username=PASSWORD + ":",
    )
    # The password is in docker.password; the user has also pasted it elsewhere. Only the fields that
    # are not secret may echo their own value; the password field itself is never echoed.
    errors = errors_of(sample(docker__password=PASSWORD, docker__passwordSecretRef={"name": "x"}))
    assert errors and all(PASSWORD not in str(e) for e in errors)
    assert all(PASSWORD + ":" not in str(e) for e in errors_of(obj))  # usernames are never echoed


# ---- parse_name_list_strict --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (None, "namespace", None),
        ("", "namespace", None),
        ("*", "namespace", None),
        ("  *  ", "serviceaccount", None),
        ("   ", "namespace", None),
        ("a", "namespace", ["a"]),
        ("a,b", "namespace", ["a", "b"]),
        (" a , b ", "namespace", ["a", "b"]),
        ("default,builder.bot", "serviceaccount", ["default", "builder.bot"]),
        ("a" * 100 + ".b", "serviceaccount", ["a" * 100 + ".b"]),
    ],
)
def test_parse_name_list(value: str | None, kind: Any, expected: list[str] | None) -> None:
    assert parse_name_list_strict(value, kind) == expected


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        ("a,,b", "namespace", "item 2 is empty"),
        (",", "namespace", "item 1 is empty"),
        ("*,a", "namespace", "must stand alone"),
        ("a,*", "serviceaccount", "must stand alone"),
        ("**", "namespace", "not a valid DNS-1123 label"),
        ("a.b", "namespace", "not a valid DNS-1123 label"),
        ("A", "serviceaccount", "upper case"),
        ("a_b", "namespace", "underscores"),
        ("a\tb", "namespace", "not a valid"),
        ("\ta", "namespace", "not a valid"),  # only spaces are trimmed
        ("a" * 64, "namespace", "at most 63"),
        ("a" * 254, "serviceaccount", "at most 253"),
    ],
)
def test_parse_name_list_refuses(value: str, kind: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_name_list_strict(value, kind)
    assert fragment in str(info.value)
    assert "expected" in str(info.value)


def test_parse_name_list_without_all() -> None:
    assert parse_name_list_strict("", "namespace", allow_all=False) == []
    assert parse_name_list_strict(None, "namespace", allow_all=False) == []
    assert parse_name_list_strict("kube-system", "namespace", allow_all=False) == ["kube-system"]
    with pytest.raises(ValueError, match="not allowed here"):
        parse_name_list_strict("*", "namespace", allow_all=False)
    with pytest.raises(ValueError, match="unknown list kind"):
        parse_name_list_strict("a", "pod")  # type: ignore[arg-type]


# ---- validate_server --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server",
    ["example.tencentcloudcr.com", "a.b.c:1", "a:65535", "xn--bcher-kva.example", "127.0.0.1:5000", "r"],
)
def test_validate_server_accepts(server: str) -> None:
    assert validate_server(server) is None


@pytest.mark.parametrize(
    "server",
    [
        "",
        " ",
        "https://a",
        "a/b",
        "u@a",
        "a b",
        "A",
        "a_b",
        "a:",
        "a:0",
        "a:99999",
        "[::1]",
        "a.",
        "*.a",
        "ä.com",
        "a\x00b",
        "a:+1",
        "a:\u0661",
    ],
)
def test_validate_server_refuses(server: str) -> None:
    message = validate_server(server)
    assert message is not None and message != ""
