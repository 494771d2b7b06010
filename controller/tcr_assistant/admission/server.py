"""The HTTPS admission webhook: ``k8s.httpserver.BoundedServer`` with the add-on's routes.

``WebhookServer`` serves ``POST /validate-tcr-tencentcloudcr-com-v1-imagepullsecret``
(``admission.handle``) and whatever other POST routes it is given (the Pod webhook's); the query
string is ignored (the API server appends ``?timeout=…``). ``GET /healthz`` and ``/readyz``
answer ``ok``. A route that is switched off (e.g. the Pod route when the Pod webhook is off)
answers 404 saying so. A refused POST is answered with an AdmissionReview response. Limits and
certificate reloading: ``k8s.httpserver``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path

from tcr_assistant.admission import review as admission
from tcr_assistant.admission.review import JSONDict
from tcr_assistant.k8s.certstore import CertificateStore
from tcr_assistant.k8s.connections import ServerLimits
from tcr_assistant.k8s.httpserver import HEALTH_PATH, BoundedServer
from tcr_assistant.spec.api import WEBHOOK_PATH

#: Answers one AdmissionReview body: (body, max body bytes) -> (HTTP status, response document).
Review = Callable[[bytes, int], tuple[int, JSONDict]]

__all__ = ["WEBHOOK_PATH", "Review", "WebhookServer"]

log = logging.getLogger(__name__)


def _review_error(status: int, message: str) -> JSONDict:
    return admission.review_response("", False, code=status, message=message)


def _ok() -> tuple[int, str, bytes]:
    return HTTPStatus.OK, "text/plain; charset=utf-8", b"ok"


class WebhookServer(BoundedServer):
    """The HTTPS admission webhook, with certificates from ``cert_dir`` (see the module docstring)."""

    def __init__(self, host: str, port: int, cert_dir: Path, *, limits: ServerLimits | None = None,
                 routes: Mapping[str, Review] | None = None, switched_off: Mapping[str, str] | None = None,
                 on_drop: Callable[[str], None] | None = None, drain: float = 0.0) -> None:
        """``routes``: more POST paths (e.g. the Pod webhook's) and what answers them; ``drain``: see
        ``BoundedServer.stop``."""
        store = CertificateStore(Path(cert_dir))
        super().__init__(
            host, port, name="webhook", limits=limits or ServerLimits(max_body_bytes=admission.MAX_BODY_BYTES),
            certs=store, pages={HEALTH_PATH: _ok, "/readyz": _ok},
            routes={WEBHOOK_PATH: admission.handle, **(routes or {})}, switched_off=switched_off, on_drop=on_drop,
            error_document=_review_error, drain=drain,
        )
        self.certs: CertificateStore = store

    def start(self) -> None:
        """Bind and serve in a background thread. Missing certificates are logged, not fatal."""
        if self._server is None and self.certs.context() is None:
            log.warning(
                "webhook: no certificate in %s yet; connections are closed until one appears", self.certs.cert_dir
            )
        super().start()

    def __enter__(self) -> WebhookServer:
        self.start()
        return self
