"""The webhook certificate's pure decisions: what a Secret holds, and the next step."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tcr_assistant import certificates, servingcert
from tcr_assistant.certificates import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, Step, decide, inspect

NAMES = servingcert.service_names("tcr-assistant-webhook-service", "tcr-assistant-system")
VALIDITY = 300.0
T0 = 1_800_000_000.0


def issued(now: float = T0) -> dict[str, bytes]:
    return certificates.issue(NAMES, now, VALIDITY)


def test_a_fresh_certificate_is_kept_until_two_thirds_of_its_lifetime() -> None:
    data = issued()
    facts = inspect(data, NAMES)
    assert facts.problem is None and len(facts.authorities) == 1
    trusted = certificates.fingerprints(data[CA_CERT])
    assert decide(facts, trusted, T0 + 1) == (Step.KEEP, "valid")
    due = certificates.next_check(facts, T0 + 1)
    assert due is not None and T0 + 0.6 * VALIDITY < due < T0 + 0.7 * VALIDITY
    assert decide(facts, trusted, due)[0] is Step.ADD_CA


def test_missing_or_unusable_secrets_are_issued_again_and_say_why_without_key_material() -> None:
    good, other = issued(), issued()
    cases = {
        "the Secret does not exist": None,
        "the Secret lacks ca.key": {k: v for k, v in good.items() if k != CA_KEY},
        "a certificate or key in the Secret does not parse": {**good, TLS_CERT: b"not a certificate"},
        "tls.key is not the key of tls.crt": {**good, TLS_KEY: other[TLS_KEY]},
        "ca.key is not the key of the newest CA in ca.crt": {**good, CA_KEY: other[CA_KEY]},
        "the serving certificate is not signed by a CA in ca.crt": {**good, CA_CERT: other[CA_CERT],
                                                                    CA_KEY: other[CA_KEY]},
    }
    for why, data in cases.items():
        facts = None if data is None else inspect(data, NAMES)
        step, reason = decide(facts, None, T0)
        assert (step, reason) == (Step.ISSUE, why)
        assert "PRIVATE" not in reason and "BEGIN" not in reason
    assert decide(inspect(good, ["elsewhere.example"]), None, T0) == (
        Step.ISSUE, "the serving certificate does not name elsewhere.example")
    assert decide(inspect(good, NAMES), None, T0 + VALIDITY + 1) == (Step.ISSUE, "the serving certificate has expired")


def test_the_serving_certificate_waits_for_the_new_ca_to_be_trusted() -> None:
    data = issued()
    old = certificates.fingerprints(data[CA_CERT])
    later = T0 + 0.7 * VALIDITY
    added = certificates.apply(Step.ADD_CA, data, NAMES, later, VALIDITY)
    assert added is not None
    facts = inspect(added, NAMES)
    assert len(facts.authorities) == 2 and added[TLS_CERT] == data[TLS_CERT]
    assert decide(facts, old, later)[0] is Step.WAIT
    both = certificates.fingerprints(added[CA_CERT])
    assert decide(facts, both, later)[0] is Step.RENEW_SERVING


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=0.4), min_size=30, max_size=60))
def test_over_many_lifetimes_the_served_certificate_is_always_trusted_and_valid(gaps: list[float]) -> None:
    """Passes at arbitrary times (never later than the keeper's own due time): after every write
    the certificate served is signed by a CA the published caBundle holds, it has not expired,
    and the bundle never holds more than two CAs."""
    now = T0
    data: dict[str, bytes] | None = None
    published: frozenset[str] | None = None
    steps: list[Step] = []
    for gap in gaps:
        for _ in range(5):  # one wake-up: passes until nothing is written
            facts = inspect(data, NAMES) if data is not None else None
            step, _ = decide(facts, published, now)
            new = certificates.apply(step, data or {}, NAMES, now, VALIDITY)
            if new is None:
                break
            steps.append(step)
            data = new
            if step is not Step.ISSUE:
                after = inspect(data, NAMES)
                assert after.serving_issuer in (published or frozenset()), step
        assert data is not None
        published = certificates.fingerprints(data[CA_CERT])  # the caBundle follows the Secret
        facts = inspect(data, NAMES)
        assert facts.problem is None and facts.serving is not None
        assert facts.serving.not_after > now and len(facts.authorities) <= 2
        due = certificates.next_check(facts, now)
        now = min(now + gap * VALIDITY, due if due is not None else now + gap * VALIDITY)
    assert steps.count(Step.ISSUE) == 1, steps
    if now - T0 > 2 * VALIDITY:
        assert {Step.ADD_CA, Step.RENEW_SERVING, Step.PRUNE} <= set(steps)


def test_only_our_secret_or_one_named_in_values_is_trusted() -> None:
    settings = servingcert.CertSettings(namespace="tcr-assistant-system", secret="tcr-assistant-webhook-server-cert",
                                        webhook_configuration="v", names=NAMES, validity=VALIDITY, cert_dir=Path("/x"))
    ours = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "tcr-assistant"}}}
    helms = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}}}
    unlabelled: dict[str, object] = {"metadata": {}}
    trust, Trust = servingcert.trust, servingcert.Trust
    assert [trust(s, existing=False) for s in (None, ours, helms, unlabelled)] == [
        Trust.KEEP, Trust.KEEP, Trust.REFUSED, Trust.REFUSED]
    assert {trust(s, existing=True) for s in (None, ours, helms, unlabelled)} == {Trust.AS_IS}
    data = {key: b"x" for key in (CA_CERT, TLS_CERT, TLS_KEY)}
    refused = servingcert.refusal(settings, helms, data, Trust.REFUSED)
    assert refused is not None and "Secret tcr-assistant-system/tcr-assistant-webhook-server-cert" in refused
    assert "webhook.existingCertSecret=tcr-assistant-webhook-server-cert" in refused
    assert servingcert.refusal(settings, ours, data, Trust.KEEP) is None
    assert servingcert.refusal(settings, helms, data, Trust.AS_IS) is None
    assert "create it with tls.crt, tls.key and ca.crt" in (servingcert.refusal(settings, None, {}, Trust.AS_IS) or "")
    lacking = servingcert.refusal(settings, helms, {TLS_CERT: b"x", TLS_KEY: b"x"}, Trust.AS_IS)
    assert lacking is not None and "lacks ca.crt" in lacking
