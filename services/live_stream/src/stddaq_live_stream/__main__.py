"""`python -m stddaq_live_stream CONFIG ADDRESS [-s SUFFIX] [-t array-1.0|bsread]`."""

import sys

from stddaq_live_stream.service import main

sys.exit(main())
