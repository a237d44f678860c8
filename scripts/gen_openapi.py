"""Print the driver's OpenAPI document as committed in docs/openapi.json (`make docs`)."""

import sys

from stddaq_driver.openapi import openapi_text

sys.stdout.write(openapi_text())
