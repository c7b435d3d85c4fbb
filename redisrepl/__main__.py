"""``python -m redisrepl verify [options]``: see redisrepl.verify."""

import sys

USAGE = "usage: python -m redisrepl verify [the options of twistd redisrepl]"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "verify":
        print(USAGE, file=sys.stderr)
        return 2
    from redisrepl.verify import main as verify

    return verify(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
