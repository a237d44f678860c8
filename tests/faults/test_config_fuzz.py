"""Fuzzing the config loader: any JSON document, valid or not, gives a DaqConfig or a
ConfigError with one line per problem, never another exception, an exit or a read of
another file. The same holds for the bytes of a config file (load_config)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stddaq_common.config.model import ConfigError, DaqConfig, load_config, parse_config
from tests.common.configs import pco_config

EXAMPLES = int(os.environ.get("STDDAQ_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

VALID: dict[str, Any] = pco_config("fuzz")

FIELDS = sorted(DaqConfig.model_fields)
RESERVED = [
    "_env_file",
    "_cli_parse_args",
    "_secrets_dir",
    "_env_prefix",
    "_cli_exit_on_error",
    "_case_sensitive",
    "_env_nested_delimiter",
    "model_config",
    "__class__",
    "writers",
]
"""Keys that are not config fields but mean something to pydantic or to DaqConfig."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(FIELDS + RESERVED) | st.text(max_size=16)


def _check(data: Any) -> None:
    try:
        config = parse_config(data, "fuzz.json")
    except ConfigError as error:
        assert error.lines and all(line.startswith("fuzz.json") for line in error.lines)
        return
    assert isinstance(config, DaqConfig)
    assert config.writers >= 1


@FUZZ
@given(st.dictionaries(keys, json_values, max_size=8))
def test_random_objects_give_a_config_or_config_error(data: dict[str, Any]) -> None:
    _check(data)


@FUZZ
@given(st.dictionaries(keys, json_values, max_size=4))
def test_a_valid_config_with_random_changes(changes: dict[str, Any]) -> None:
    _check({**VALID, **changes})


@FUZZ
@given(json_values)
def test_any_json_document(data: Any) -> None:
    _check(data)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "daq.json"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as error:
        assert error.lines


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("_cli_parse_args", True),
        ("_cli_parse_args", ["--help"]),
        ("_env_file", "/etc/passwd"),
        ("_secrets_dir", "/etc"),
        ("_env_prefix", ""),
    ],
)
def test_settings_options_in_a_file_are_ignored_keys(tmp_path: Path, key: str, value: Any) -> None:
    """pydantic-settings takes these as init options (parse sys.argv and exit, read a dotenv
    or secrets file); in a config file they are unknown keys, kept and ignored."""
    path = tmp_path / "daq.json"
    path.write_text(json.dumps({**VALID, key: value}))
    config = load_config(path)
    assert config.model_extra is not None and config.model_extra[key] == value
    assert config.detector_name == "fuzz" and config.log_level == "info"
