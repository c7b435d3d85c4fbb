"""``python -m redisrepl.sandbox demo|up ...``: the sandbox's command line (demo.py)."""

import sys

from redisrepl.sandbox.demo import main

sys.exit(main())
