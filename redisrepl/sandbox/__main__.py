"""``python -m redisrepl.sandbox demo|up ...``: the sandbox's command line."""

import sys

from redisrepl.sandbox import main

sys.exit(main())
