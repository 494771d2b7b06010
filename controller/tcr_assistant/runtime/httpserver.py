"""Bind addresses of the health and metrics servers (the servers themselves: ``webhook.BoundedServer``,
which bounds every connection; an unbounded server would give a slow client a thread forever)."""

from __future__ import annotations


def parse_bind(addr: str) -> tuple[str, int] | None:
    """ ":8081" -> ("", 8081); "0" -> None (disabled)."""
    if addr in ("0", ""):
        return None
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)
