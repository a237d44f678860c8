"""What the REST and WebSocket APIs can do: start, stop, status, config, stats.

Both APIs call the same `DriverControl`, so they refuse the same things for the same
reasons. Every refusal is a `Refused` (a subclass naming its kind, with a reason that
names what was wrong); the APIs map the kind to their own answer; nothing is created before all checks passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from typing import Any

from pydantic import ValidationError

from stddaq_common.config.model import DaqConfig, format_validation_error
from stddaq_common.runtime.stats import Stats
from stddaq_driver.acquisition import AcquisitionPlan, master_file, writer_file
from stddaq_driver.driver_stats import WebCounters
from stddaq_driver.engine import Engine, ReconfigureCommand, StartCommand, StopCommand
from stddaq_driver.models import StartRequest, config_type_errors
from stddaq_driver.path_policy import PathPolicy, PathRefused
from stddaq_driver.receiver_watch import ReceiverView
from stddaq_driver.state import DaqState, is_stoppable
from stddaq_driver.status_board import (
    WRITER_ALIVE_S,
    AcquisitionSnapshot,
    Busy,
    StatusBoard,
    WriterSnapshot,
)

log = logging.getLogger(__name__)

FIXED_CONFIG_FIELDS = ("detector_name", "detector_type", "ipc_dir")
"""Fields a running system cannot change: they name (or decide) its shared memory and
sockets, which every other service already uses."""


class Refused(Exception):
    """A request the driver does not carry out, with a reason that names what was wrong.

    Transport-neutral: each subclass says *why* (busy, path not allowed, ...); the REST
    API maps the kind to an HTTP status code, the WebSocket to `rejected` or `error`.
    Logged once (at warning level) when it is made, so operators see every refusal."""

    def __init__(self, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.reason = reason
        self.errors = errors or []
        super().__init__(reason)
        log.warning("refused (%s): %s", type(self).__name__, reason)


class InvalidRequest(Refused):
    """The request itself is malformed: a body that is not JSON, a field of the wrong type
    or value (`errors` lists them, each with its `loc`)."""


class Conflict(Refused):
    """The request does not fit the current state: busy, nothing to stop, a file that
    exists, a field a running system cannot change."""


class PathNotAllowed(Refused):
    """The acquisition path is outside the allowed roots (also through a link)."""


class WritersNotRunning(Refused):
    """A writer has not been heard from recently: a start would fail."""


class NotSaved(Refused):
    """The config could not be saved; nothing was changed."""


class DriverControl:
    """The operations of the control APIs, safe to call from the web thread."""

    def __init__(
        self,
        config: DaqConfig,
        *,
        config_path: str | None,
        persist_config: bool,
        board: StatusBoard,
        engine: Engine,
        path_policy: PathPolicy,
        counters: WebCounters,
        stats: Stats,
    ) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._config_data = _read_config_data(config_path, config)
        self._config_path = config_path
        self._persist_config = persist_config
        self.board = board
        self._engine = engine
        self.path_policy = path_policy
        self.counters = counters
        self._stats = stats

    # --- acquisition ---

    def start(self, request: StartRequest) -> AcquisitionSnapshot:
        """Start an acquisition; raise Conflict (busy, file exists), PathNotAllowed or
        WritersNotRunning."""
        with self._lock:
            config = self._config
            state = self.board.snapshot().state
            if state is not DaqState.IDLE:
                self.counters.starts_refused_busy.inc()
                raise Conflict(str(Busy(state)))
            try:
                path = self.path_policy.check(request.path)
            except PathRefused as error:
                self.counters.paths_refused.inc()
                raise PathNotAllowed(f"path: {error.reason}") from None
            silent = self.board.silent_writers()
            if silent:
                self.counters.starts_refused_writers.inc()
                raise WritersNotRunning(
                    f"writer(s) {silent} not running: nothing heard from them in the last "
                    f"{WRITER_ALIVE_S:g} s (number_of_writers is {config.writers})",
                )
            n_writers = config.writers
            files = [writer_file(path, request.file_prefix, k) for k in range(n_writers)]
            master = master_file(path, request.file_prefix) if n_writers > 1 else None
            for file in [*files, *([master] if master else [])]:
                if os.path.lexists(file):
                    self.counters.starts_refused_writers.inc()
                    raise Conflict(
                        f"file {file} already exists: choose another file_prefix or path "
                        "(files are never overwritten)",
                    )
            uid = config.writer_user_id if request.writer_id is None else request.writer_id
            started = time.time()
            snapshot = AcquisitionSnapshot(
                state=DaqState.STARTED,
                path=path,
                file_prefix=request.file_prefix,
                n_image=request.n_image,
                compression=request.compression,
                files=tuple(files),
                master_file=master,
                started_at=started,
                writers=tuple(WriterSnapshot(index=k) for k in range(n_writers)),
            )
            try:
                stored = self.board.begin(snapshot)
            except Busy as error:
                self.counters.starts_refused_busy.inc()
                raise Conflict(str(error)) from None
            plan = AcquisitionPlan(
                acquisition_id=stored.acquisition_id,
                path=path,
                file_prefix=request.file_prefix,
                n_image=request.n_image,
                uid=uid,
                compression=request.compression,
                n_writers=n_writers,
                detector=config.detector_name,
                config=config.model_dump(mode="json"),
                started_at=started,
            )
            self._engine.submit(StartCommand(plan))
            return stored

    def stop(self) -> AcquisitionSnapshot:
        """Ask the running acquisition to stop (it closes its files, then is idle)."""
        with self._lock:
            snapshot = self.board.snapshot()
            if not is_stoppable(snapshot.state):
                self.counters.stops_refused.inc()
                raise Conflict(f"no acquisition to stop (state {snapshot.state})")
            self._engine.submit(StopCommand(snapshot.acquisition_id))
            return snapshot

    def status(self) -> AcquisitionSnapshot:
        """The current snapshot."""
        return self.board.snapshot()

    def liveness(self) -> tuple[list[float | None], ReceiverView, float | None]:
        """Seconds since each writer was heard, the receiver as seen (cached 1 s), seconds
        since image metadata came (None: never)."""
        return self.board.writer_ages(), self._engine.receiver_view(), self.board.metadata_age()

    # --- config ---

    @property
    def config(self) -> DaqConfig:
        """The config in use."""
        return self._config

    def replace_config(self, data: Any) -> DaqConfig:
        """Validate and use a whole new config; refuse a changed detector or while busy."""
        if not isinstance(data, dict):
            self.counters.config_changes_refused.inc()
            raise InvalidRequest(f"the config must be a JSON object, got {type(data).__name__}")
        self._check_types(data)
        with self._lock:
            new_config = self._validate(data)
            self._apply(data, new_config)
            return new_config

    def update_config(self, changes: Any) -> DaqConfig:
        """Change some fields of the config (merged into the current file's fields)."""
        if not isinstance(changes, dict):
            self.counters.config_changes_refused.inc()
            raise InvalidRequest(f"the changes must be a JSON object, got {type(changes).__name__}")
        self._check_types(changes)
        with self._lock:
            data = {**self._config_data, **changes}
            new_config = self._validate(data)
            self._apply(data, new_config)
            return new_config

    def _check_types(self, data: dict[str, Any]) -> None:
        """Refuse a field whose JSON type is wrong, before pydantic could convert it."""
        errors = config_type_errors(data, DaqConfig)
        if errors:
            self.counters.config_changes_refused.inc()
            reason = "; ".join(f"config.{error['loc'][-1]}: {error['msg']}" for error in errors)
            raise InvalidRequest(reason, errors)

    def _validate(self, data: dict[str, Any]) -> DaqConfig:
        try:
            new_config = DaqConfig(**data)
        except ValidationError as error:
            self.counters.config_changes_refused.inc()
            lines = format_validation_error("config", error)
            errors = [
                {"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]}
                for item in error.errors(include_url=False, include_input=False)
            ]
            raise InvalidRequest("; ".join(lines), errors) from None
        for name in FIXED_CONFIG_FIELDS:
            old, new = getattr(self._config, name), getattr(new_config, name)
            if old != new:
                self.counters.config_changes_refused.inc()
                raise Conflict(
                    f"{name} cannot be changed while the system runs ({old!r} -> {new!r}): "
                    "it names the shared memory and sockets of every service; edit the "
                    "config file and restart all services instead",
                )
        state = self.board.snapshot().state
        if state is not DaqState.IDLE:
            self.counters.config_changes_refused.inc()
            raise Conflict(f"the config cannot change during an acquisition (state {state})")
        return new_config

    def _apply(self, data: dict[str, Any], new_config: DaqConfig) -> None:
        if self._persist_config and self._config_path is not None:
            try:
                _write_json_atomically(self._config_path, data)
            except OSError as error:
                self.counters.config_changes_refused.inc()
                raise NotSaved(
                    f"cannot save the config to {self._config_path}: {error.strerror}; "
                    "nothing was changed",
                ) from None
        self._config_data = dict(data)
        self._config = new_config
        self.board.set_writer_count(new_config.writers)
        self._engine.submit(ReconfigureCommand(new_config))
        self.counters.config_changes.inc()

    @property
    def config_saved_to(self) -> str | None:
        """Where config changes are saved (None: only applied in memory)."""
        return self._config_path if self._persist_config else None

    # --- stats ---

    @property
    def stats_source(self) -> Stats:
        """The driver's Stats (for the REST `/metrics` route)."""
        return self._stats

    def stats(self) -> dict[str, int | float | bool | str]:
        """Every counter (with its rate over the last stats period) and gauge."""
        return dict(self._stats.fields())


def _read_config_data(path: str | None, config: DaqConfig) -> dict[str, Any]:
    """The config file's own fields (so a change keeps unknown keys and leaves defaults
    out); the effective config if the file cannot be read again."""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
    return config.model_dump(mode="json")


def _write_json_atomically(path: str, data: dict[str, Any]) -> None:
    """Replace `path` by `data` as indented JSON, never leaving a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise

