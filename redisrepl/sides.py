"""The two sides redisrepl keeps equal, and how keys are printed (pure)."""

LOCAL = "local"
REMOTE = "remote"
OTHER = {LOCAL: REMOTE, REMOTE: LOCAL}


def short(key, limit=80):
    """A key as printed in logs: its bytes as text, non-printable ones
    escaped (\\xNN), cut when long."""
    text = repr(key)[2:-1]
    return text if len(text) <= limit else text[:limit] + f"...({len(key)} bytes)"
