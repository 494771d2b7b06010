"""Helpers of the security suite: unique names, and kubectl acting as another user."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

from support import kubectl


def uid() -> str:
    return uuid.uuid4().hex[:8]


def as_user(user: str, *args: str, obj: Any = None) -> subprocess.CompletedProcess[str]:
    """kubectl impersonating ``user`` (``obj``, if given, on stdin as JSON); never raises on refusal."""
    return kubectl(f"--as={user}", *args, input_text=json.dumps(obj) if obj is not None else None, check=False)
