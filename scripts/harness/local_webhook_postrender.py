#!/usr/bin/env python3
"""helm --post-renderer: point the chart's validating webhook at a host process on loopback.

Reads the rendered manifests on stdin and writes them to stdout, replacing the `service:`
clientConfig of each webhook in Validating- and MutatingWebhookConfigurations with
`url: $TCR_ADDON_WEBHOOK_URL` plus the service's path (a Service reference reaches a Pod through
kube-proxy, never a host process). The caBundle stays unset, as the chart renders it: the
controller keeps it.
Every other document passes through unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness

harness.use_venv()
import yaml  # noqa: E402

KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def rewrite(documents: list[object], url: str) -> list[object]:
    for document in documents:
        if isinstance(document, dict) and document.get("kind") in KINDS:
            for webhook in document.get("webhooks") or []:
                path = ((webhook.get("clientConfig") or {}).get("service") or {}).get("path") or ""
                webhook["clientConfig"] = {"url": url.rstrip("/") + path}
    return documents


def main() -> int:
    url = os.environ.get("TCR_ADDON_WEBHOOK_URL")
    if not url:
        print("local_webhook_postrender: set TCR_ADDON_WEBHOOK_URL", file=sys.stderr)
        return 2
    documents = [doc for doc in yaml.safe_load_all(sys.stdin) if doc is not None]
    yaml.safe_dump_all(rewrite(documents, url), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
