"""Posting line-protocol lines to InfluxDB 1.x's /write endpoint, off the hot path.

`InfluxPoster.post(line)` only appends to a bounded queue and returns at once; one daemon
thread sends the queued lines in batches. When InfluxDB cannot be reached (or answers 5xx)
the batch stays queued and is retried with a growing pause (1 s doubling to 30 s); when
InfluxDB rejects a batch (4xx: bad line, unknown database) it is dropped. Every failure is
logged on `stddaq.influx` (a warning when the error changes, debug while it repeats) and
counted; nothing here ever raises into or blocks the service.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

from stddaq_common.runtime.counters import Counter

_log = logging.getLogger("stddaq.influx")

FIRST_RETRY_PAUSE_S = 1.0
LONGEST_RETRY_PAUSE_S = 30.0


def redact_url(url: str) -> str:
    """`url` with any password (user:pass@ or p=/password= in the query) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = [
        (key, "***" if key in ("p", "password") else value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query, safe="*"), "")
    )


def check_influx_url(url: str) -> str:
    """Return `url` if it is an InfluxDB write URL (`http://host:8086/write?db=NAME`)."""
    example = "e.g. http://127.0.0.1:8086/write?db=stddaq"
    try:
        parts = urllib.parse.urlsplit(url)
        shown = redact_url(url)
        _ = parts.port
    except ValueError as error:
        raise ValueError(f"influxdb_url is not a usable URL: {error} ({example})") from None
    query = urllib.parse.parse_qs(parts.query)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"influxdb_url {shown!r} is not an http(s) URL with a host ({example})")
    if not parts.path.endswith("/write"):
        raise ValueError(f"influxdb_url {shown!r} must point at InfluxDB's /write ({example})")
    if not query.get("db") and not query.get("bucket"):
        raise ValueError(f"influxdb_url {shown!r} names no database: add ?db=NAME ({example})")
    if query.get("precision", ["ns"]) != ["ns"]:
        raise ValueError(f"influxdb_url {shown!r}: stats lines carry ns timestamps; leave out 'precision'")
    return url


def _influx_reason(error: urllib.error.HTTPError) -> str:
    """InfluxDB's own error text from a failed response (its body is {"error": ...})."""
    try:
        body = error.read(2000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        body = ""
    try:
        reason = json.loads(body).get("error", body)
    except (ValueError, AttributeError):
        reason = body
    text = str(reason).strip() or str(error.reason)
    return f"HTTP {error.code}: {text}"


class InfluxPoster:
    """A bounded queue of lines and one background thread POSTing them to InfluxDB."""

    def __init__(
        self,
        url: str,
        *,
        max_queued_lines: int = 10_000,
        max_batch_lines: int = 5_000,
        timeout_s: float = 5.0,
        posted: Counter | None = None,
        failed: Counter | None = None,
        dropped: Counter | None = None,
    ) -> None:
        self.url = check_influx_url(url)
        self.shown_url = redact_url(url)
        self.max_queued_lines = max_queued_lines
        self.max_batch_lines = max_batch_lines
        self.timeout_s = timeout_s
        self.posted = posted or Counter("influx_posted_lines")
        self.failed = failed or Counter("influx_failed_posts")
        self.dropped = dropped or Counter("influx_dropped_lines")
        self._queue: deque[str] = deque()
        self._wakeup = threading.Condition()
        self._sending = False
        self._in_flight = 0
        self._draining = False  # close() began: one last attempt, no more retries
        self._closed = False
        self._full_reported = False
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(self, line: str) -> bool:
        """Queue one line for sending; False (and counted as dropped) if it cannot be."""
        with self._wakeup:
            if self._closed or len(self._queue) >= self.max_queued_lines:
                self.dropped.value += 1
                if not self._closed and not self._full_reported:
                    self._full_reported = True
                    _log.warning(
                        "InfluxDB queue full (%d lines): dropping new stats lines "
                        "until InfluxDB takes them again",
                        len(self._queue),
                    )
                return False
            self._queue.append(line)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stddaq-influx-poster", daemon=True)
                self._thread.start()
            self._wakeup.notify_all()
        return True

    @property
    def queued(self) -> int:
        """Lines waiting to be sent (including a batch being sent)."""
        return len(self._queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued line was sent or given up; False on timeout."""
        with self._wakeup:
            return self._wakeup.wait_for(lambda: not self._queue and not self._sending, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Try once more to send what is queued (at most `timeout` s), then stop the thread.

        Lines that still cannot be delivered are counted as dropped and reported.
        """
        with self._wakeup:
            self._draining = True
            self._wakeup.notify_all()
        self.flush(timeout)
        with self._wakeup:
            self._closed = True
            in_flight = self._in_flight if self._sending else 0
            left = max(0, len(self._queue) - in_flight)
            for _ in range(left):
                self._queue.pop()
            self.dropped.value += left
            self._wakeup.notify_all()
        if left:
            _log.warning("InfluxDB: %d stats lines not delivered before exit", left)
        thread = self._thread
        if thread is not None:
            thread.join(min(timeout, 1.0))

    # --- the background thread ---

    def _run(self) -> None:
        pause = FIRST_RETRY_PAUSE_S
        while True:
            with self._wakeup:
                self._wakeup.wait_for(lambda: bool(self._queue) or self._closed)
                if self._closed:
                    return
                batch = list(self._queue)[: self.max_batch_lines]
                self._sending = True
                self._in_flight = len(batch)
            outcome = self._send(batch)
            with self._wakeup:
                give_up = outcome == "retry" and self._draining
                if outcome != "retry" or give_up:
                    del_count = min(len(batch), len(self._queue))
                    for _ in range(del_count):
                        self._queue.popleft()
                    if give_up:
                        self.dropped.value += len(batch)
                        _log.warning("InfluxDB: %d stats lines not delivered before exit", len(batch))
                    pause = FIRST_RETRY_PAUSE_S
                if len(self._queue) < self.max_queued_lines:
                    self._full_reported = False
                self._sending = False
                self._wakeup.notify_all()
                if outcome == "retry" and not give_up:
                    self._wakeup.wait_for(lambda: self._draining or self._closed, pause)
                    pause = min(pause * 2, LONGEST_RETRY_PAUSE_S)

    def _send(self, batch: list[str]) -> str:
        """POST one batch; "ok", "rejected" (dropped) or "retry" (kept queued)."""
        body = ("\n".join(batch) + "\n").encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            reason = _influx_reason(error)
            with self._wakeup:
                self.failed.value += 1
                if 400 <= error.code < 500:
                    self.dropped.value += len(batch)
            if 400 <= error.code < 500:
                self._report(f"InfluxDB rejected {len(batch)} stats lines: {reason}")
                return "rejected"
            self._report(f"InfluxDB write failed ({reason}); retrying")
            return "retry"
        except (OSError, http.client.HTTPException) as error:
            cause = str(getattr(error, "reason", None) or error)
            with self._wakeup:
                self.failed.value += 1
            self._report(f"InfluxDB at {self.shown_url} unreachable ({cause}); retrying")
            return "retry"
        except Exception as error:  # never let the poster thread die
            with self._wakeup:
                self.failed.value += 1
                self.dropped.value += len(batch)
            self._report(f"InfluxDB post failed unexpectedly: {error!r}")
            return "rejected"
        with self._wakeup:
            self.posted.value += len(batch)
        if self._last_error is not None:
            _log.info("InfluxDB writes to %s succeed again", self.shown_url)
            self._last_error = None
        return "ok"

    def _report(self, message: str) -> None:
        """Warn when the error is new, then only at debug level while it repeats."""
        level = logging.DEBUG if message == self._last_error else logging.WARNING
        self._last_error = message
        _log.log(level, message)
