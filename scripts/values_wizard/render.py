"""The values file text: YAML quoting and the ``values.yaml.j2`` template."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

from values_wizard.errors import Failure

TEMPLATE = Path(__file__).with_name("values.yaml.j2")

_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def yaml_quote(value: object) -> str:
    """``value`` as a YAML double-quoted scalar of printable ASCII only.

    Backslash and double quote are escaped, every other character outside printable ASCII
    becomes ``\\xXX`` / ``\\uXXXX`` / ``\\UXXXXXXXX``, so no parser (PyYAML, Go's yaml as helm
    uses it) folds, trims or reinterprets anything: any string reads back unchanged.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"yaml_quote takes a string, not {type(value).__name__}")
    text = str(value)
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def render(values: Mapping[str, Any], holds_password: bool) -> str:
    """The values file text from ``values.yaml.j2`` (``values`` in the TKE add-on shape)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["q"] = yaml_quote
    template = env.get_template(TEMPLATE.name)
    g = values["global"]
    return template.render(crs=g["imagePullSecretsCrs"], hosts=g["hosts"], cluster=g["cluster"],
                           tests=values.get("tests"), holds_password=holds_password)


def render_checked(values: Mapping[str, Any], holds_password: bool) -> str:
    """:func:`render`, and the text read back: it must give exactly ``values``.

    Raises :class:`Failure` without quoting the text (it may hold a password).
    """
    text = render(values, holds_password)
    try:
        read_back = yaml.safe_load(text)
    except yaml.YAMLError:
        read_back = None  # the parser's message would quote the text
    if read_back != values:
        raise Failure("internal error: the rendered values do not read back as intended (template bug)")
    return text
