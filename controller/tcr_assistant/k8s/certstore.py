"""The certificate of an HTTPS server, from files that change under it.

``tls.crt`` / ``tls.key`` are read from ``cert_dir``; every new connection checks their inode,
size and mtime (one ``stat`` each) and, when they changed, loads a new ``SSLContext`` (a
half-written pair that fails to load keeps the previous context until the next try).
Kubernetes' atomic Secret-volume updates (the ``..data`` symlink swap) and in-place rewrites are
both picked up, without a restart.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class CertificateStore:
    """An SSLContext for ``cert_dir/tls.crt`` + ``tls.key``, rebuilt when either file changes."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_dir = Path(cert_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._context: ssl.SSLContext | None = None
        self.loads = 0

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"

    def _current_stamp(self) -> tuple[Any, ...] | None:
        stamps: list[Any] = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)  # follows symlinks (Secret volumes swap a ..data symlink)
            except OSError:
                return None
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(stamps)

    def context(self) -> ssl.SSLContext | None:
        """The current context (reloaded if the files changed), or None if none could ever be loaded."""
        stamp = self._current_stamp()
        with self._lock:
            if stamp is not None and stamp != self._stamp:
                try:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                    ctx.load_cert_chain(self.cert_file, self.key_file)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    log.warning(
                        "webhook: cannot load %s / %s (keeping the previous certificate): %s",
                        self.cert_file,
                        self.key_file,
                        exc,
                    )
                else:
                    self._context = ctx
                    self._stamp = stamp
                    self.loads += 1
                    log.info("webhook: serving certificate loaded from %s", self.cert_dir)
            return self._context
