"""The `stddaq` command: `stddaq config validate FILE...`, `stddaq config schema`, `... docs`.

Other installed packages add subcommands through the entry-point group `stddaq.commands`:
each entry point is a function `register(subparsers)` that adds its parser and sets
`func=<callable(args) -> int>` as a default.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points

from stddaq_common.config.docs import config_markdown
from stddaq_common.config.model import ConfigError, config_json_schema, load_config
from stddaq_common.ring.geometry import ram_buffer_warning, ring_geometry


def _validate(files: list[str], quiet: bool) -> int:
    status = 0
    for path in files:
        try:
            config = load_config(path)
        except ConfigError as error:
            for line in error.lines:
                print(line, file=sys.stderr)
            status = 2
            continue
        warning = ram_buffer_warning(config)
        if warning is not None:
            print(f"{path}: warning: {warning}", file=sys.stderr)
        if not quiet:
            geometry = ring_geometry(config)
            print(
                f"{path}: ok: detector {config.detector_name} ({config.detector_type}), "
                f"{config.image_pixel_height}x{config.image_pixel_width} x {config.bit_depth} bit, "
                f"ring {geometry.n_slots} slots x {geometry.slot_bytes} bytes "
                f"= {geometry.total_bytes / 2**30:.2f} GiB, {config.writers} writer(s), "
                f"{len(config.live_stream_configs)} live stream(s)"
                + (f", ignored keys: {', '.join(sorted(config.model_extra))}" if config.model_extra else "")
            )
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `stddaq` command."""
    parser = argparse.ArgumentParser(prog="stddaq", description="stddaq command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="the DAQ config file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    validate = config_commands.add_parser("validate", help="check config files, one line per problem")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    config_commands.add_parser("schema", help="print the JSON schema of the config file")
    config_commands.add_parser("docs", help="print the Markdown reference of the config file")
    for entry in entry_points(group="stddaq.commands"):
        entry.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `stddaq` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "func"):
        return int(args.func(args))
    if args.config_command == "validate":
        return _validate(args.files, args.quiet)
    if args.config_command == "schema":
        print(json.dumps(config_json_schema(), indent=2))
        return 0
    print(config_markdown(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
