"""InfluxDB 1.x line protocol: one point as `measurement,tag=v field=1i,rate=2.5 <ns>`.

Escaping follows InfluxDB 1.x: commas and spaces in the measurement; commas, equals signs
and spaces in tag keys, tag values and field keys; double quotes and backslashes inside
string field values. Integers carry the `i` suffix, floats are written as Python's shortest
round-trip repr, booleans as `true`/`false`. NaN and infinities cannot be stored by
InfluxDB, so such fields are left out of the line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

FieldValue = int | float | bool | str

_MEASUREMENT_SPECIALS = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_SPECIALS = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING_SPECIALS = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def _check_one_line(text: str, what: str) -> None:
    if not text:
        raise ValueError(f"line protocol: {what} must not be empty")
    if "\n" in text or "\r" in text:
        raise ValueError(f"line protocol: {what} {text!r} must not contain a line break")
    if text.endswith("\\"):
        raise ValueError(f"line protocol: {what} {text!r} must not end with a backslash")


def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas and spaces)."""
    _check_one_line(name, "measurement")
    return name.translate(_MEASUREMENT_SPECIALS)


def escape_key(text: str, what: str = "tag or field key") -> str:
    """Escape a tag key, tag value or field key (commas, equals signs and spaces)."""
    _check_one_line(text, what)
    return text.translate(_KEY_SPECIALS)


def format_field_value(value: FieldValue) -> str | None:
    """The line-protocol text of one field value; None for NaN and infinities."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.translate(_STRING_SPECIALS) + '"'
    if isinstance(value, numbers.Integral):
        return f"{int(value)}i"
    number = float(value)
    if not math.isfinite(number):
        return None
    return repr(number)


def format_tags(tags: Mapping[str, str]) -> str:
    """`,k=v,k2=v2` sorted by key (InfluxDB's preferred order); empty values are left out."""
    parts = [
        f",{escape_key(key, 'tag key')}={escape_key(value, f'tag {key} value')}"
        for key, value in sorted(tags.items())
        if value != ""
    ]
    return "".join(parts)


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Iterable[tuple[str, FieldValue]],
    timestamp_ns: int,
) -> str | None:
    """One complete line (no trailing newline); None if no field has a storable value."""
    field_parts = []
    for key, value in fields:
        text = format_field_value(value)
        if text is not None:
            field_parts.append(f"{escape_key(key, 'field key')}={text}")
    if not field_parts:
        return None
    head = escape_measurement(measurement) + format_tags(tags)
    return f"{head} {','.join(field_parts)} {int(timestamp_ns)}"
