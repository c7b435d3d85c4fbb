"""The ``redisrepl`` command (also ``python -m redisrepl``):

    redisrepl run [options]      the daemon, in the foreground: the same
                                 service as ``twistd -n redisrepl [options]``
    redisrepl verify [options]   compare both sides once (redisrepl.verify)
    redisrepl status --metrics [HOST:]PORT
                                 a live view of a running daemon (redisrepl.status)
    redisrepl reconcile --dry-run [options]
                                 what a reconcile would copy and delete now,
                                 writing nothing (redisrepl.dry_run)

``twistd redisrepl`` stays the service entry point (init scripts, systemd).
"""

import sys

USAGE = """usage: redisrepl {run|verify|status|reconcile} [options]

  run      the daemon in the foreground, as `twistd -n redisrepl [options]`
           (its options: redisrepl run --help)
  verify   compare the namespace on both sides once, without writing
           (redisrepl verify --help)
  status   a live view of a running daemon, from its --metrics
           (redisrepl status --help)
  reconcile --dry-run
           what a reconcile would copy and delete now, by side, without
           writing (redisrepl reconcile --help)"""


def run(argv):
    """twistd in the foreground with the redisrepl plugin; no pidfile."""
    from twisted.scripts.twistd import run as twistd

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "redisrepl", *argv]
    twistd()
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command == "run":
        return run(rest)
    if command == "verify":
        from redisrepl.verify import main as verify

        return verify(rest)
    if command == "status":
        from redisrepl.status import main as status

        return status(rest)
    if command == "reconcile":
        from redisrepl.dry_run import main as dry_run

        return dry_run(rest)
    print(USAGE, file=sys.stderr)
    return 0 if command in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
