"""Request and response bodies of the control API (REST and WebSocket share StartRequest)."""

from __future__ import annotations

from enum import Enum
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stddaq_common.wire.compression import CompressionName
from stddaq_driver.path_policy import path_syntax_problem
from stddaq_driver.state import DaqState

Compression = CompressionName

FILE_PREFIX_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}$"
MAX_UID = 2**32 - 2


STRICT = ConfigDict(extra="forbid", strict=True)
"""Every input model: unknown fields are refused, and no value is converted (`"100"`,
`true`, `" 7 "` and `1e9` are not integers), so a client learns at once that it sent
something else than it meant."""


class StartRequest(BaseModel):
    """Start an acquisition: write the next images published after the start to HDF5."""

    model_config = STRICT

    path: str = Field(
        description="Absolute directory the files go to; must lie inside an allowed root",
        examples=["/data/p12345/scan_001"],
    )
    file_prefix: str = Field(
        "file",
        pattern=FILE_PREFIX_PATTERN,
        description="Writer k writes <path>/<file_prefix><k>.h5; with several writers the "
        "master file is <path>/<file_prefix>.h5",
    )
    n_image: int | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="Images to write; null or absent: until stopped",
    )
    writer_id: int | None = Field(
        None,
        ge=0,
        le=MAX_UID,
        description="Unix uid the files are written as; null or absent: the config's "
        "writer_user_id",
    )
    compression: Compression = Field(
        "none", description="none, or bitshuffle_lz4 (HDF5 bitshuffle filter 32008)"
    )
    start_id: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="std_daq's first image id; only 0 (its default: the images published "
        "after the start) is supported, any other value is refused naming the field",
    )

    @field_validator("start_id")
    @classmethod
    def _check_start_id(cls, value: int) -> int:
        if value != 0:
            raise ValueError(
                f"{value} is not supported: stddaq records the images published after the "
                "start (start_id 0, std_daq's default); leave it out or send 0"
            )
        return value

    @field_validator("path")
    @classmethod
    def _check_path_syntax(cls, value: str) -> str:
        problem = path_syntax_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class StartResponse(BaseModel):
    """The accepted acquisition: its id and the files it will write."""

    acquisition_id: int
    state: DaqState
    files: list[str]
    master_file: str | None


class WriterStatus(BaseModel):
    """What the driver knows about one writer process."""

    index: int
    alive: bool = Field(description="A message from it arrived in the last few seconds")
    seconds_since_heard: float | None = Field(
        description="Seconds since its last message; null: never heard from"
    )
    state: str = Field(description="Its part in the current acquisition")
    images_written: int
    images_not_written: int
    bytes_written: int
    images_flushed: int = Field(
        0, description="Images its file holds for sure (as of its last flush; a std_daq writer reports none)"
    )
    last_error: str | None


class ReceiverStatus(BaseModel):
    """What the driver sees of the receiver (it has no channel back to it: it looks at the
    receiver's metadata socket, and at the metadata it gets)."""

    alive: bool | None = Field(
        description="A process serves the receiver's metadata socket; null: cannot tell "
        "(not an ipc:// socket file)"
    )
    address: str = Field(description="The metadata socket the driver subscribes to")
    seconds_since_metadata: float | None = Field(
        description="Seconds since the driver last got image metadata (null: never since it "
        "started); large while the camera sends nothing"
    )
    problem: str | None = Field(description="Why the receiver is taken for down")


class StatusResponse(BaseModel):
    """The acquisition state and the progress of the current (or last) acquisition."""

    state: DaqState
    acquisition_id: int = Field(description="0 before the first acquisition")
    busy: bool = Field(description="An acquisition is running or its files are closing")
    path: str | None
    file_prefix: str | None
    n_image: int | None = Field(description="Images requested; null: until stopped")
    compression: Compression | None
    files: list[str]
    master_file: str | None
    images_dealt: int = Field(description="Images handed to the writers (reset at start)")
    images_written: int = Field(description="Images the writers wrote (reset at start)")
    images_missing: int = Field(description="id_gaps + images_not_written")
    id_gaps: int = Field(description="Image ids that were never published (gaps in the ids)")
    images_not_written: int = Field(
        description="Images a writer could not write: their ring slot was overwritten first"
    )
    missing_ids: list[int] = Field(
        description="Ids of images_not_written (the first 1000)"
    )
    first_image_id: int | None
    last_image_id: int | None
    bytes_written: int
    started_at: float | None = Field(description="Unix time of the start request")
    finished_at: float | None = Field(description="Unix time the acquisition ended")
    outcome: Literal["file_saved", "error"] | None = Field(
        description="How the last acquisition ended; null while running or before the first"
    )
    last_error: str | None = Field(description="Why the last acquisition failed (kept until the next start)")
    writers: list[WriterStatus]
    receiver: ReceiverStatus | None = Field(None, description="The receiver as the driver sees it")
    down: list[str] = Field(
        default_factory=list,
        description="Services the driver sees down: `receiver` (no live process serves its "
        "metadata socket), `writer-K` (not heard from in the last 3 s)",
    )


class ErrorResponse(BaseModel):
    """Every refused request: `detail` says what was wrong, naming the field or path."""

    detail: str


class ConfigUpdateResponse(BaseModel):
    """The config after an accepted change and whether it was saved to the config file."""

    saved_to: str | None = Field(description="Config file written, null if only applied")
    config: dict[str, object]


def _kinds(annotation: Any) -> set[type] | None:
    """The JSON kinds a config field of this annotation takes (None: not checked here)."""
    if get_origin(annotation) is Literal:
        return {type(value) for value in get_args(annotation)}
    if get_origin(annotation) in (Union, UnionType):
        kinds: set[type] = set()
        for member in get_args(annotation):
            if member is type(None):
                kinds.add(type(None))
                continue
            inner = _kinds(member)
            if inner is None:
                return None
            kinds |= inner
        return kinds
    if annotation is bool:
        return {bool}
    if annotation is int:
        return {int}
    if annotation is float:
        return {int, float}
    if annotation is str:
        return {str}
    return None


def _is_kind(value: Any, kinds: set[type]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, str) and any(issubclass(kind, Enum) for kind in kinds):
        return True
    return any(type(value) is kind or (kind is float and type(value) is int) for kind in kinds)


_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def config_type_errors(data: dict[str, Any], model: type[BaseModel]) -> list[dict[str, Any]]:
    """One error per top-level field of `data` whose JSON type is not the model field's
    (`"16"`, `true` or `1e9` for an integer): the config API converts nothing."""
    errors = []
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        kinds = _kinds(field.annotation)
        if kinds is None or _is_kind(value, kinds):
            continue
        wanted = " or ".join(sorted(_KIND_NAMES.get(kind, kind.__name__) for kind in kinds))
        errors.append(
            {
                "loc": ["body", name],
                "msg": f"Input should be {wanted}, got {type(value).__name__} {value!r}",
                "type": "strict_type",
            }
        )
    return errors
