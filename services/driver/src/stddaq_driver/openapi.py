"""The OpenAPI document of the REST API, without running a driver.

`python -m stddaq_driver.openapi [FILE]` writes it (default: stdout); the committed copy is
docs/openapi.json, kept current by a golden test.
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from stddaq_driver.auth import TokenAuth
from stddaq_driver.control import DriverControl
from stddaq_driver.rest_api import create_app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (routes only: no handler runs, so no control is needed)."""
    routes_only = cast(DriverControl, None)
    return create_app(routes_only, TokenAuth(None)).openapi()


def openapi_text() -> str:
    """The document as committed: indented, keys in FastAPI's order, trailing newline."""
    return json.dumps(openapi_document(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to the file named in argv (or stdout)."""
    args = sys.argv[1:] if argv is None else argv
    text = openapi_text()
    if args:
        with open(args[0], "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
