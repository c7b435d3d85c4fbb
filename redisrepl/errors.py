"""What can go wrong on the way to either Redis, sorted by what to do about it."""


class ReplicationError(Exception):
    """Base class: a read or write of one side did not happen.

    ``kind`` is a short label for metrics: ``http_503``, ``tls``,
    ``connection_refused``, ``timeout``, ``redis_error``...; ``side`` the
    side it happened on, when the one who raised it knows.
    """

    def __init__(self, message: str, kind: str = "error", side: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.side = side

    def on(self, side: str) -> "ReplicationError":
        """The same error, as one of ``side``."""
        return type(self)(str(self), self.kind, side)


class LinkError(ReplicationError):
    """The side cannot be reached right now (connection, TLS, proxy, Webdis
    without its Redis, timeout): retry every key later, with backoff."""


class RefusedError(ReplicationError):
    """The side answered but refused this command (a Webdis ACL, a Redis
    error reply): retry this key later, with a longer backoff; other keys
    go on."""


class NoScriptError(RefusedError):
    """EVALSHA of a script the server has not cached (yet, or since a restart)."""


class StreamError(Exception):
    """The remote event stream sent something that is not the Redis protocol
    or not a keyspace event."""
