"""The namespace and where redisrepl keeps its own keys (pure).

- Keys starting with the namespace are replicated, except two families:
- ``<namespace>__redisrepl__:`` (the reserved prefix): the heartbeat keys,
  which must be inside the namespace so that the event stream carries
  their events; never replicated.
- ``__redisrepl__:{<namespace>}:`` (the meta prefix): everything else
  redisrepl keeps on either side (the epoch, the synchronised table, the
  temporary keys of big copies...). Outside the namespace, so writing them
  causes no event on anyone's stream; never replicated either (they are
  excluded by name even where the namespace is a prefix of them).
"""

import attrs

RESERVED_INFIX = b"__redisrepl__:"
#: Every meta prefix starts with this; so does every key of redisrepl's
#: outside the namespace (the temporary keys of big strings' copies too).
META_ROOT = b"__redisrepl__"


@attrs.frozen
class Namespace:
    prefix: bytes
    reserved: bytes = attrs.field(init=False)
    meta: bytes = attrs.field(init=False)

    def __attrs_post_init__(self):
        # spelled once: owns() runs for every event
        object.__setattr__(self, "reserved", self.prefix + RESERVED_INFIX)
        object.__setattr__(self, "meta", META_ROOT + b":{" + self.prefix + b"}:")

    @property
    def allow_key(self):
        """The local key an operator sets to let one mass deletion through."""
        return self.meta + b"allow-mass-delete"

    def owns(self, key):
        """Is ``key`` one redisrepl replicates?"""
        return key.startswith(self.prefix) and not key.startswith((self.reserved, META_ROOT))
