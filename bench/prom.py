"""Prometheus text exposition: scrape, parse (only the families asked for), diff."""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str, names: Iterable[str]) -> Samples:
    """Samples of the metric families in ``names`` (exact sample names, e.g. ``x_total``)."""
    wanted = tuple(names)
    out: Samples = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(wanted):
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            end = line.rfind("}")
            labels: Labels = tuple(sorted(_LABEL.findall(line[brace + 1 : end])))
            rest = line[end + 1 :].split()
        else:
            parts = line.split()
            name, labels, rest = parts[0], (), parts[1:]
        if name not in wanted or not rest:
            continue
        out[(name, labels)] = out.get((name, labels), 0.0) + float(rest[0])
    return out


def fetch(url: str, context: ssl.SSLContext | None = None, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return bytes(response.read()).decode("utf-8", "replace")


def admin_context(pki_dir: Path) -> ssl.SSLContext:
    """TLS context with the control plane's CA and the admin client certificate (for /metrics)."""
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return context


def diff(after: Samples, before: Samples) -> Samples:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) != 0}


def value(samples: Mapping[tuple[str, Labels], float], name: str, **match: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``match``."""
    total = 0.0
    for (n, labels), v in samples.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == want for k, want in match.items()):
            total += v
    return total


APISERVER_REQUESTS = "apiserver_request_total"
APF_DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
DURATION_SUM = "apiserver_request_duration_seconds_sum"
DURATION_COUNT = "apiserver_request_duration_seconds_count"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def by_verb_resource(samples: Samples) -> dict[str, int]:
    """``apiserver_request_total`` deltas as {"VERB resource[/sub]": count} (non-resource requests dropped)."""
    out: dict[str, int] = {}
    for (name, labels), v in samples.items():
        if name != APISERVER_REQUESTS:
            continue
        d = dict(labels)
        resource = d.get("resource", "")
        if not resource:
            continue
        if d.get("subresource"):
            resource += "/" + d["subresource"]
        key = f"{d.get('verb', '?')} {resource}"
        out[key] = out.get(key, 0) + round(v)
    return dict(sorted(out.items()))


def writes_of(counts: Mapping[str, int], resources: Iterable[str] | None = None) -> int:
    keep = set(resources) if resources is not None else None
    total = 0
    for key, n in counts.items():
        verb, _, resource = key.partition(" ")
        if verb in WRITE_VERBS and (keep is None or resource in keep):
            total += n
    return total


def mean_latency_ms(samples: Samples, min_count: int = 50) -> dict[str, float]:
    """Mean server-side latency (``apiserver_request_duration_seconds``) per "VERB resource" with at least
    ``min_count`` requests in ``samples`` (a diff)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for (name, labels), v in samples.items():
        if name not in (DURATION_SUM, DURATION_COUNT):
            continue
        d = dict(labels)
        if not d.get("resource"):
            continue
        key = f"{d.get('verb', '?')} {d['resource']}" + (f"/{d['subresource']}" if d.get("subresource") else "")
        target = sums if name == DURATION_SUM else counts
        target[key] = target.get(key, 0.0) + v
    return {k: round(sums.get(k, 0.0) / c * 1000, 2) for k, c in sorted(counts.items()) if c >= min_count}
