"""`python -m stddaq_web CONFIG [options]`: run the web service."""

from __future__ import annotations

from stddaq_web.service import console_main

if __name__ == "__main__":
    console_main()
