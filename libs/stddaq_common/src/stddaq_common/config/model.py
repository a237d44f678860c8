"""The DAQ config file: one pydantic-settings model, the single source of truth.

Every std_daq field keeps its upstream name and default (docs/interfaces.md, section 2);
stddaq's own additions are optional. Unknown keys are kept (in `model_extra`) and
ignored, so one file can carry settings of other layers. Environment variables with the
prefix `STDDAQ_` override the file (`STDDAQ_LOG_LEVEL=debug`; nested values as JSON).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DetectorType = Literal[
    "gigafrost", "eiger", "pco", "jungfrau-raw", "jungfrau-converted", "jungfrau", "bsread"
]
LogLevel = Literal["trace", "debug", "info", "warn", "warning", "err", "error", "critical", "off"]

_SETTINGS_INIT_OPTIONS = frozenset(
    name for name in inspect.signature(BaseSettings.__init__).parameters if name.startswith("_")
)
"""pydantic-settings' own init options (`_env_file`, `_cli_parse_args`, ...): never config keys."""

MAX_WRITERS = 256
"""More writers than this is a typo: the driver binds a socket per writer and lists each."""

_STREAM_ADDRESS = re.compile(r"^tcp://(?P<host>\*|[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")


class ConfigError(Exception):
    """A DAQ config file that cannot be used; `lines` holds one line per problem."""

    def __init__(self, source: str, lines: list[str]) -> None:
        self.source = source
        self.lines = lines
        super().__init__("\n".join(lines))


def check_stream_address(address: str) -> str:
    """Return `address` if it is a `tcp://host:port` bind address, else raise ValueError."""
    match = _STREAM_ADDRESS.match(address)
    if match is None:
        raise ValueError(f"stream address {address!r} is not of the form tcp://host:port")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"stream address {address!r} has port {port} outside 1..65535")
    return address


StreamAddress = Annotated[str, AfterValidator(check_stream_address)]


class LiveStreamConfig(BaseModel):
    """Rate mode of one live stream: `forward`, or `batch`/`periodic` with `config` [Y, N]."""

    model_config = ConfigDict(extra="allow")

    type: Literal["forward", "periodic", "batch"] = Field(
        description="forward: every image; batch [Y, N]: ids with id % N < Y; "
        "periodic [Y, N]: N times a second, the next Y images"
    )
    config: list[int] = Field(
        default_factory=list, description="[Y, N] for batch and periodic; ignored for forward"
    )

    @model_validator(mode="after")
    def _check_rate(self) -> LiveStreamConfig:
        if self.type == "forward":
            return self
        if len(self.config) != 2:
            raise ValueError(f"{self.type} needs config [Y, N], got {self.config}")
        y, n = self.config
        if y < 1 or n < 1:
            raise ValueError(f"{self.type} config [Y, N] needs Y >= 1 and N >= 1, got {self.config}")
        if self.type == "batch" and y > n:
            raise ValueError(f"batch config [Y, N] needs Y <= N, got {self.config}")
        return self


class DaqConfig(BaseSettings):
    """The DAQ config file common to all services (std_daq's fields plus stddaq's additions)."""

    model_config = SettingsConfigDict(
        env_prefix="STDDAQ_",
        extra="allow",
        validate_default=True,
        json_schema_extra={"title": "stddaq DAQ config"},
    )

    # --- mandatory (std_daq) ---
    detector_name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Detector name; prefix of shared-memory and IPC names",
    )
    detector_type: DetectorType = Field(description="Kind of detector")
    n_modules: int = Field(ge=1, description="Number of detector modules (1 for cameras)")
    bit_depth: Literal[8, 16, 32] = Field(description="Bits per pixel of the final image")
    image_pixel_height: int = Field(gt=0, description="Final image height in pixels")
    image_pixel_width: int = Field(gt=0, description="Final image width in pixels")
    start_udp_port: int = Field(ge=0, le=65535, description="First UDP port of the modules")
    module_positions: dict[str, list[int]] = Field(
        description='Module placement {"<module>": [x0, y0, x1, y1]}; {} for cameras'
    )

    # --- optional (std_daq), upstream defaults ---
    log_level: LogLevel = Field("info", description="Log level")
    stats_collection_period: float = Field(
        10, gt=0, description="Seconds between stats lines and metric updates"
    )
    ram_buffer_gb: float = Field(
        0, ge=0, description="Ring buffer size in GiB, read as an unsigned integer as std_daq reads it "
        "(0.5 becomes 0); 0 = 1000 slots (never fewer than 1000)"
    )
    max_number_of_forwarders_spawned: int = Field(8, ge=0)
    use_all_forwarders: bool = False
    sender_sends_full_images: bool = False
    module_sync_queue_size: int = Field(50, ge=1)
    number_of_writers: int = Field(0, ge=0, le=MAX_WRITERS, description="HDF5 writers; 0 means 1")
    gpfs_block_size: int = Field(16777216, gt=0)
    delay_filter_timeout: float = Field(10, ge=0)
    switch_user_active: bool = False
    writer_user_id: int = Field(0, ge=0, description="uid files are written as; 0 = no switch")
    submodule_info: dict[str, Any] = Field(default_factory=dict)
    live_stream_configs: dict[StreamAddress, LiveStreamConfig] = Field(
        default_factory=dict,
        description='Live streams by exact bind address: {"tcp://host:port": {"type", "config"}}',
    )

    # --- stddaq additions (all optional) ---
    ipc_dir: str = Field(
        "/tmp", description="stddaq: directory of the ipc:// metadata sockets (a shared volume)"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="stddaq: log line format; json for Filebeat"
    )
    influxdb_url: str | None = Field(
        None,
        description="stddaq: InfluxDB /write URL the stats lines are also posted to "
        "(e.g. http://127.0.0.1:8086/write?db=stddaq)",
    )

    def __init__(self, **values: Any) -> None:
        """Validate `values` (the file's keys). Keys named like pydantic-settings' init
        options (`_env_file`, `_cli_parse_args`, `_secrets_dir`, ...) are kept as unknown
        keys and never obeyed: a config file must not make a service read other files,
        parse its command line or exit."""
        options = {key: values.pop(key) for key in list(values) if key in _SETTINGS_INIT_OPTIONS}
        super().__init__(**values)
        if options and self.__pydantic_extra__ is not None:
            self.__pydantic_extra__.update(options)

    @field_validator("module_positions")
    @classmethod
    def _check_module_positions(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for module, corners in value.items():
            if len(corners) != 4:
                raise ValueError(f"module {module!r} needs [x0, y0, x1, y1], got {corners}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment (`STDDAQ_*`) overrides the file, which is passed as init values."""
        return (env_settings, init_settings)

    @property
    def writers(self) -> int:
        """Number of HDF5 writers actually run (`number_of_writers`, 0 meaning 1)."""
        return max(1, self.number_of_writers)


def format_validation_error(source: str, error: ValidationError) -> list[str]:
    """One line per problem: `<source>: <field>: <what is wrong> (got <value>)`."""
    lines = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"] if part != "[key]"]
        field = ".".join(loc) if loc else "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        got = ""
        if item["type"] != "missing" and not isinstance(item.get("input"), dict | type(None)):
            text = json.dumps(item["input"], default=str)
            got = f" (got {text if len(text) <= 60 else text[:57] + '...'})"
        lines.append(f"{source}: {field}: {message}{got}")
    return lines


def parse_config(data: Any, source: str = "<config>") -> DaqConfig:
    """Validate an already-parsed config object; raise ConfigError naming every problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"{source}: the config must be a JSON object, got {type(data).__name__}"])
    try:
        return DaqConfig(**data)
    except ValidationError as error:
        raise ConfigError(source, format_validation_error(source, error)) from None


def load_config(path: str | Path) -> DaqConfig:
    """Read and validate a DAQ config file; raise ConfigError with one line per problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(source, [f"{source}: cannot read the config file: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(source, [f"{source}: the config file is not UTF-8: {error}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            source,
            [f"{source}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"],
        ) from None
    return parse_config(data, source)


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of the DAQ config file, generated from DaqConfig."""
    return DaqConfig.model_json_schema()
