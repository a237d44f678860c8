"""The DAQ config model: upstream file loads unchanged, wrong files get one line per problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stddaq_common.cli import main as stddaq_main
from stddaq_common.config.docs import config_markdown
from stddaq_common.config.model import ConfigError, DaqConfig, config_json_schema, load_config
from stddaq_common.ring.geometry import RingGeometry, image_dtype, ring_geometry
from tests.common.configs import pco_config

REPO = Path(__file__).resolve().parents[2]
SHARED_EXAMPLE = REPO.parent / "shared" / "examples" / "gf_tomcat.json"
EXAMPLE = REPO / "tests" / "data" / "gf_tomcat.json"
"""A byte-for-byte copy of the shared std_daq example, so the test runs wherever the repo is."""

MINIMAL: dict[str, Any] = pco_config("pco-test", 2160, 2560)


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "daq.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert all(line.startswith(f"{path}: ") for line in caught.value.lines)
    return caught.value.lines


@pytest.fixture(autouse=True)
def _no_stddaq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STDDAQ_"):
            monkeypatch.delenv(key)


def test_our_copy_of_the_upstream_example_is_unchanged() -> None:
    if not SHARED_EXAMPLE.exists():
        pytest.skip(f"the shared example {SHARED_EXAMPLE} is not beside the repository")
    assert EXAMPLE.read_bytes() == SHARED_EXAMPLE.read_bytes()


def test_upstream_example_loads_unchanged() -> None:
    raw = json.loads(EXAMPLE.read_text())
    config = load_config(EXAMPLE)
    for key, value in raw.items():
        loaded = getattr(config, key)
        if key == "live_stream_configs":
            loaded = {a: c.model_dump() for a, c in loaded.items()}
        assert loaded == value, key
    assert config.writers == 1
    assert config.log_level == "info"
    assert config.stats_collection_period == 10
    assert config.ram_buffer_gb == 0
    assert config.gpfs_block_size == 16777216
    assert config.live_stream_configs["tcp://129.129.95.38:20000"].config == [1, 1]


def test_upstream_defaults() -> None:
    config = DaqConfig(**MINIMAL)
    assert (config.log_level, config.stats_collection_period, config.ram_buffer_gb) == ("info", 10, 0)
    assert config.max_number_of_forwarders_spawned == 8
    assert config.use_all_forwarders is False
    assert config.sender_sends_full_images is False
    assert config.module_sync_queue_size == 50
    assert config.number_of_writers == 0 and config.writers == 1
    assert config.gpfs_block_size == 16777216
    assert config.delay_filter_timeout == 10
    assert config.switch_user_active is False
    assert config.writer_user_id == 0
    assert config.submodule_info == {} and config.live_stream_configs == {}
    assert config.ipc_dir == "/tmp" and config.log_format == "text" and config.influxdb_url is None


def test_unknown_keys_are_kept_and_ignored(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {**MINIMAL, "rest_port": 5000, "beamline": "x"}))
    assert config.model_extra == {"rest_port": 5000, "beamline": "x"}


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STDDAQ_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("STDDAQ_NUMBER_OF_WRITERS", "3")
    monkeypatch.setenv("STDDAQ_IPC_DIR", "/run/stddaq")
    config = load_config(write_config(tmp_path, {**MINIMAL, "number_of_writers": 1}))
    assert (config.log_level, config.writers, config.ipc_dir) == ("debug", 3, "/run/stddaq")


def test_missing_mandatory_field(tmp_path: Path) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "image_pixel_height"}
    assert problems(tmp_path, data) == [f"{tmp_path / 'daq.json'}: image_pixel_height: Field required"]


def test_bit_depth_12(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, {**MINIMAL, "bit_depth": 12})
    assert "bit_depth: Input should be 8, 16 or 32 (got 12)" in line


def test_malformed_live_stream_address(tmp_path: Path) -> None:
    data = {**MINIMAL, "live_stream_configs": {"tcp:/host:9000": {"type": "forward"}}}
    (line,) = problems(tmp_path, data)
    assert "live_stream_configs.tcp:/host:9000" in line
    assert "not of the form tcp://host:port" in line


def test_live_stream_port_out_of_range_and_bad_mode(tmp_path: Path) -> None:
    data = {
        **MINIMAL,
        "live_stream_configs": {
            "tcp://127.0.0.1:70000": {"type": "forward"},
            "tcp://127.0.0.1:9001": {"type": "batch", "config": [5, 2]},
            "tcp://127.0.0.1:9002": {"type": "sometimes", "config": [1, 1]},
        },
    }
    lines = problems(tmp_path, data)
    assert len(lines) == 3
    assert "port 70000 outside 1..65535" in lines[0]
    assert "batch config [Y, N] needs Y <= N" in lines[1]
    assert "tcp://127.0.0.1:9002.type" in lines[2]


def test_type_errors_one_line_each(tmp_path: Path) -> None:
    data = {**MINIMAL, "image_pixel_width": "wide", "use_all_forwarders": "maybe", "module_positions": []}
    lines = problems(tmp_path, data)
    assert len(lines) == 3
    assert any("image_pixel_width: Input should be a valid integer" in line for line in lines)
    assert any("use_all_forwarders: Input should be a valid boolean" in line for line in lines)
    assert any("module_positions: Input should be a valid dictionary" in line for line in lines)


def test_not_json_and_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"detector_name": "x",\n  oops}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.lines == [
        f"{path}: not valid JSON: Expecting property name enclosed in double quotes at line 2 column 3"
    ]
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object, got list"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.json")


def test_ring_geometry_follows_upstream_rules() -> None:
    pco = DaqConfig(**MINIMAL)
    assert ring_geometry(pco) == RingGeometry(slot_bytes=2160 * 2560 * 2, n_slots=1000)
    big = DaqConfig(**{**MINIMAL, "ram_buffer_gb": 20})
    assert ring_geometry(big).n_slots == (20 * 2**30) // (2160 * 2560 * 2)
    small = DaqConfig(**{**MINIMAL, "image_pixel_height": 3, "image_pixel_width": 5, "bit_depth": 8})
    geometry = ring_geometry(small)
    assert (geometry.slot_bytes, geometry.n_slots) == (15, 1000)
    assert geometry.total_bytes == 2 * 1024 * 1024
    assert geometry.slot_of(2**40 + 7) == (2**40 + 7) % 1000
    assert geometry.offset_of(1001) == 15
    converted = DaqConfig(**{**MINIMAL, "detector_type": "jungfrau-converted", "bit_depth": 16})
    assert image_dtype(converted).str == "<f4"
    assert ring_geometry(converted).slot_bytes == 2160 * 2560 * 4


def test_committed_schema_and_docs_are_current() -> None:
    committed = json.loads((REPO / "docs" / "config-schema.json").read_text())
    assert committed == config_json_schema(), "run `make docs` to regenerate docs/config-schema.json"
    assert (REPO / "docs" / "config.md").read_text() == config_markdown(), "run `make docs`"


def test_cli_validate_and_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_config(tmp_path, MINIMAL, "good.json")
    bad = write_config(tmp_path, {**MINIMAL, "bit_depth": 12}, "bad.json")
    assert stddaq_main(["config", "validate", str(good)]) == 0
    assert "ok: detector pco-test (pco)" in capsys.readouterr().out
    assert stddaq_main(["config", "validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"{bad}: bit_depth: Input should be 8, 16 or 32 (got 12)"]
    assert stddaq_main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["required"][0] == "detector_name"


def test_cli_error_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != "image_pixel_height"}
    bad = write_config(tmp_path, data)
    result = subprocess.run(
        [sys.executable, "-m", "stddaq_common.cli", "config", "validate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == f"{bad}: image_pixel_height: Field required\n"
