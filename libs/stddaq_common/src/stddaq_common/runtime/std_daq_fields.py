"""std_daq's stats field names, written beside stddaq's own in every stats line.

std_daq's services log fields such as `processed_times`, `repetition_rate_hz`,
`n_missed_packets`, `n_corrupted_images`, `n_written_images` and `avg_throughput`
(spec section 9); dashboards built for std_daq query those names. Each is computed, per
service, from stddaq's counters when a line is made: the sum of the named fields
(counters, their `_rate`, or gauges; `prefix_*` sums every counter whose name starts
with `prefix_`, rates left out). Units are stddaq's: rates per second,
`avg_throughput` in bytes per second over the stats period.
"""

from __future__ import annotations

StdDaqField = tuple[str, tuple[str, ...]]
"""(std_daq's name, the stddaq fields whose sum it is)."""

STD_DAQ_FIELDS: dict[str, tuple[StdDaqField, ...]] = {
    "receiver": (
        ("processed_times", ("frames_published",)),
        ("repetition_rate_hz", ("frames_published_rate",)),
        ("n_missed_packets", ("missing_ids",)),
        ("n_corrupted_images", ("rejected_*",)),
        ("avg_throughput", ("image_bytes_written_rate",)),
    ),
    "writer": (
        ("processed_times", ("images_written",)),
        ("repetition_rate_hz", ("images_written_rate",)),
        ("n_written_images", ("images_written",)),
        ("n_corrupted_images", ("images_missing",)),
        ("avg_throughput", ("bytes_written_rate",)),
    ),
    "driver": (
        ("processed_times", ("images_dealt",)),
        ("repetition_rate_hz", ("images_dealt_rate",)),
        ("n_written_images", ("images_written",)),
        ("n_corrupted_images", ("images_not_written",)),
        ("avg_throughput", ("bytes_written_rate",)),
    ),
    "live_stream": (
        ("processed_times", ("images_sent",)),
        ("repetition_rate_hz", ("images_sent_rate",)),
        ("n_corrupted_images", ("bad_images", "torn_images")),
    ),
}
"""std_daq's fields of each stddaq service, by service name."""


def std_daq_values(
    fields: dict[str, int | float | bool | str], wanted: tuple[StdDaqField, ...]
) -> list[tuple[str, int | float]]:
    """std_daq's fields computed from `fields` (a name already used there is left alone;
    a field none of whose sources exist is left out)."""
    values: list[tuple[str, int | float]] = []
    for name, sources in wanted:
        if name in fields:
            continue
        present = [
            value
            for source in sources
            for key, value in _matching(fields, source)
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if not present:
            continue
        total = sum(present)
        values.append((name, total if all(isinstance(v, int) for v in present) else float(total)))
    return values


def _matching(
    fields: dict[str, int | float | bool | str], source: str
) -> list[tuple[str, int | float | bool | str]]:
    if source.endswith("*"):
        prefix = source[:-1]
        return [
            (key, value)
            for key, value in fields.items()
            if key.startswith(prefix) and not key.endswith("_rate")
        ]
    return [(source, fields[source])] if source in fields else []
