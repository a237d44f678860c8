"""Finding this live stream's entry in `live_stream_configs` by its exact bind address.

std_daq dies on an address missing from the config; stddaq refuses to start with one line
that names the address, the config file, and the addresses that are configured.
"""

from __future__ import annotations

from stddaq_common.config.model import DaqConfig, LiveStreamConfig, check_stream_address
from stddaq_common.runtime.runner import StartupError


class UnknownStreamAddress(StartupError):
    """The bind address is not a key of `live_stream_configs`."""


def _port_of(address: str) -> str:
    return address.rsplit(":", 1)[-1]


def stream_config_for(config: DaqConfig, address: str, source: str = "the config") -> LiveStreamConfig:
    """The `live_stream_configs` entry of `address` (exact match, as std_daq looks it up).

    Raises StartupError for an address that is not tcp://host:port and UnknownStreamAddress,
    listing the configured addresses, for one that is not configured.
    """
    try:
        check_stream_address(address)
    except ValueError as error:
        raise StartupError(str(error)) from None
    entry = config.live_stream_configs.get(address)
    if entry is not None:
        return entry
    configured = sorted(config.live_stream_configs)
    if not configured:
        raise UnknownStreamAddress(
            f"bind address {address} is not in live_stream_configs of {source}: "
            "no live stream is configured there (add "
            f'"live_stream_configs": {{"{address}": {{"type": "forward", "config": []}}}})'
        )
    same_port = [other for other in configured if _port_of(other) == _port_of(address)]
    hint = f" (did you mean {' or '.join(same_port)}? the address must match exactly)" if same_port else ""
    raise UnknownStreamAddress(
        f"bind address {address} is not in live_stream_configs of {source}; "
        f"configured addresses: {', '.join(configured)}{hint}"
    )
