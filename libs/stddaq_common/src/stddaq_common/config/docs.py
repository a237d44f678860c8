"""Documentation of the DAQ config file, generated from the DaqConfig model."""

from __future__ import annotations

import json
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stddaq_common.config.model import DaqConfig, config_json_schema

_UPSTREAM_END = "live_stream_configs"


def _type_text(name: str, schema: dict[str, Any]) -> str:
    prop = schema["properties"][name]
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " \\| ".join(str(p.get("type", "object")) for p in prop["anyOf"])
    return str(prop.get("type", "object"))


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        return f"`{json.dumps(field.default_factory())}`"  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return ""
    return f"`{json.dumps(field.default)}`"


def config_markdown() -> str:
    """A Markdown table of every config field: name, type, default, meaning, origin."""
    schema = config_json_schema()
    lines = [
        "# The DAQ config file",
        "",
        "Generated from `stddaq_common.config.model.DaqConfig` by `stddaq config docs`; do not edit.",
        "The JSON schema is docs/config-schema.json (`stddaq config schema`).",
        "Every field can be overridden by an environment variable `STDDAQ_<FIELD>` (upper case).",
        "Unknown keys are kept and ignored.",
        "",
        "| field | type | default | origin | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    origin = "std_daq"
    for name, field in DaqConfig.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(
            f"| `{name}` | {_type_text(name, schema)} | {_default_text(field)} | {origin} "
            f"| {description.removeprefix('stddaq: ')} |"
        )
        if name == _UPSTREAM_END:
            origin = "stddaq"
    return "\n".join(lines) + "\n"
