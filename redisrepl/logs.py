"""Log observers for twistd's ``--logger`` option.

    twistd --logger=redisrepl.logs.json -n redisrepl ...

writes one JSON object per line on standard output (for journald, Docker or
a log shipper): twisted.logger's event, with ``log_format`` and its fields,
``log_level``, ``log_namespace`` and ``log_time``.
"""

import sys

from twisted.logger import jsonFileLogObserver


def json():
    """One JSON object per line on standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
