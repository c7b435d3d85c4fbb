"""The Lua scripts redisrepl runs on both sides, loaded from ``redisrepl/lua``.

Each script is ``prelude.lua`` (the call's context, the side's generation,
the digest helpers), then the script's own file as the body of a function,
then an epilogue that appends the side's generation to the reply. So every
reply of every script, on either side, says which generation of that Redis
answered (see ``redisrepl.epochs``), and a wiped or restarted Redis is
noticed at its first answer. The one exception is ``piece.lua`` (a piece
of a big string's copy, whose last argument is the piece itself): loaded
alone, it ends its reply with the call's fresh id too.

Callers add the context with ``context_args`` after the script's own
arguments; ``split_generation`` takes the generation off the reply.
"""

import hashlib
from importlib import resources

import attrs

#: Seconds after a generation of the hub starts during which the hub
#: remembers which keys were written and the stamp of what they hold (the
#: recovery window: how long a site has to come back after a loss of the
#: hub and still tell refills from newer writes).
RECOVERY_WINDOW = 24 * 3600


def _read(name):
    return resources.files("redisrepl").joinpath("lua", name).read_bytes()


@attrs.frozen
class Script:
    """A Lua script and its SHA1, for EVALSHA."""

    name: str
    body: bytes
    sha: bytes = attrs.field(init=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "sha", hashlib.sha1(self.body).hexdigest().encode())


def load(name):
    """The script ``redisrepl/lua/<name>.lua``, wrapped in the prelude."""
    body = _read("prelude.lua") + b"local function main()\n" + _read(name + ".lua") + b"end\nreturn epilogue(main())\n"
    return Script(name, body)


def load_plain(name):
    """The script ``redisrepl/lua/<name>.lua`` alone, without the prelude."""
    return Script(name, _read(name + ".lua"))


def context_args(names, fresh_id, track_writes, window=RECOVERY_WINDOW, look_only=False):
    """The four context arguments that follow a script's own arguments: the
    namespace's reserved and meta prefixes (``names``: a Namespace), a
    fresh generation id, and the flags (the hub stamps its writes and keeps
    their record for ``window`` seconds; ``look_only``: the epoch is
    neither started nor touched, its generation id is b"" if the next
    writing call would start a new one, and the hub's record is only read)."""
    mark = b"r" if look_only else b"w"
    flags = mark + b"%d" % window if track_writes else mark if look_only else b""
    return [names.reserved, names.meta, fresh_id, flags]


class CrossedReply(ValueError):
    """A script's reply that ends with another call's fresh id: the reply of
    another request (Webdis can hand a connection the reply meant for a
    client that went away mid-request)."""


def split_generation(reply, fresh_id=None):
    """(payload, (generation id, stamp, start, base)) of a script's reply,
    which ends with the call's ``fresh_id`` (CrossedReply if not)."""
    if not isinstance(reply, list) or len(reply) < 5:
        raise ValueError(f"reply without the side's generation: {reply!r:.80}")
    if fresh_id is not None and reply[-1] != fresh_id:
        raise CrossedReply(f"a reply that is not this call's: {reply[-1]!r:.40} for {fresh_id!r}")
    gen_id, stamp, start, base = reply[-5:-1]
    return reply[:-5], (gen_id, int(stamp), int(start), int(base))


READ = load("read")
WRITE = load("write")
DIGEST_SCAN = load("digest_scan")
KEY_SCAN = load("key_scan")
DIGEST_KEYS = load("digest_keys")
EXISTS = load("exists")
CHUNK = load("chunk")
FINISH = load("finish")
CHECK = load("check")
FLAG_EVICTED = load("flag_evicted")
RECORD = load("record")
FORGET = load("forget")
GET = load("get")
PIECE = load_plain("piece")
