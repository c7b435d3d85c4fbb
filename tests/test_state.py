"""KeyState: READ_SCRIPT replies in, WRITE_SCRIPT arguments out, and comparison."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redisrepl.resp import ErrorReply
from redisrepl.state import (
    ABSENT,
    DIGEST_CHUNK,
    HASH,
    LIST,
    NONE,
    SET,
    STREAM,
    STRING,
    ZSET,
    BigState,
    Digester,
    KeyState,
    StateError,
    content_digest,
    from_reply,
    items_of,
    split_reply,
)

SETTINGS = settings(max_examples=200, deadline=None, database=None)

NOW = 1000.0


# -- from_reply --------------------------------------------------------------------


def test_absent_key():
    state = from_reply([b"none", b"-2"], NOW)
    assert (state.kind, state.value, state.expire_at) == (NONE, None, None)
    assert state.supported


def test_string_without_and_with_expiry():
    state = from_reply([b"string", b"-1", b"v\x00\xff"], NOW)
    assert (state.kind, state.value, state.expire_at) == (STRING, b"v\x00\xff", None)
    # the expiry is absolute (PEXPIRETIME, unix ms), whatever the time of reading
    state = from_reply([b"string", b"1700000001500", b""], NOW)
    assert (state.value, state.expire_at) == (b"", 1700000001.5)
    assert state.supported
    assert from_reply([b"string", b"0", b"v"], NOW).expire_at == 0


def test_expiry_may_be_an_integer_reply():
    assert from_reply([b"string", 1700000002000, b"v"], NOW).expire_at == 1700000002.0


def test_hash_pairs_are_sorted_by_field():
    state = from_reply([b"hash", b"-1", b"f2", b"b", b"f1", b"a", b"f3", b"c"], NOW)
    assert state.kind == HASH
    assert state.value == ((b"f1", b"a"), (b"f2", b"b"), (b"f3", b"c"))
    assert state.expire_at is None


@SETTINGS
@given(st.dictionaries(st.binary(), st.binary(), min_size=1, max_size=8), st.randoms())
def test_field_order_does_not_change_state_or_digest(fields, rnd):
    pairs = list(fields.items())
    shuffled = pairs[:]
    rnd.shuffle(shuffled)
    a = from_reply([b"hash", b"-1", *[x for p in pairs for x in p]], NOW)
    b = from_reply([b"hash", b"-1", *[x for p in shuffled for x in p]], NOW)
    assert a == b
    assert a.digest == b.digest


def test_unsupported_type_keeps_kind_and_expiry_only():
    state = from_reply([b"module", b"1700000003000"], NOW)
    assert (state.kind, state.value, state.expire_at) == ("module", None, 1700000003.0)
    assert not state.supported
    assert from_reply([b"module", b"-1"], NOW).same_as(KeyState("module"))


@pytest.mark.parametrize(
    "kind,items,value",
    [
        ("list", [b"b", b"a", b"b"], (b"b", b"a", b"b")),  # order kept
        ("set", [b"b", b"a"], (b"a", b"b")),  # order canonical
        ("zset", [b"b", b"2", b"a", b"1.5"], ((b"a", b"1.5"), (b"b", b"2"))),
        ("stream", [b"1-1", b"2", b"f", b"v", b"2-0", b"0"], ((b"1-1", (b"f", b"v")), (b"2-0", ()))),
    ],
)
def test_collections(kind, items, value):
    state = from_reply([kind.encode(), b"-1", *items], NOW)
    assert state.supported and state.value == value
    assert state.write_args(NOW)[:2] == [kind.encode(), b"0"]
    assert sorted(state.write_args(NOW)[2:]) == sorted(items)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(None, id="nil"),
        pytest.param(b"string", id="not-a-list"),
        pytest.param(ErrorReply(b"ERR boom"), id="error-reply"),
        pytest.param([], id="empty"),
        pytest.param([b"string"], id="no-pttl"),
        pytest.param([5, b"-1"], id="type-not-bytes"),
        pytest.param([None, b"-1"], id="type-nil"),
        pytest.param([b"string", b"soon", b"v"], id="pttl-not-a-number"),
        pytest.param([b"string", None, b"v"], id="pttl-nil"),
        pytest.param([b"string", [b"1"], b"v"], id="pttl-array"),
        pytest.param([b"string", b"-1"], id="string-without-value"),
        pytest.param([b"string", b"-1", b"a", b"b"], id="string-two-values"),
        pytest.param([b"string", b"-1", None], id="string-nil-value"),
        pytest.param([b"string", b"-1", 7], id="string-integer-value"),
        pytest.param([b"hash", b"-1"], id="hash-empty"),
        pytest.param([b"hash", b"-1", b"f"], id="hash-odd"),
        pytest.param([b"hash", b"-1", b"f", b"v", b"g"], id="hash-odd-long"),
        pytest.param([b"hash", b"-1", b"f", [b"v"]], id="hash-nested"),
    ],
)
def test_malformed_reply_is_a_state_error(reply):
    with pytest.raises(StateError):
        from_reply(reply, NOW)


# -- digests and same_as ---------------------------------------------------------------


def test_digest_tells_types_and_layouts_apart():
    digests = [
        KeyState(STRING, b"fv").digest,
        KeyState(HASH, ((b"f", b"v"),)).digest,
        KeyState(STRING, b"").digest,
        ABSENT.digest,
        KeyState(HASH, ((b"ab", b"c"),)).digest,
        KeyState(HASH, ((b"a", b"bc"),)).digest,
        KeyState(HASH, ((b"a", b"b"), (b"c", b"d"))).digest,
        KeyState(HASH, ((b"a", b"b\x001:c1:d"),)).digest,
    ]
    assert len(set(digests)) == len(digests)


def test_digest_depends_on_value_not_expiry():
    assert KeyState(STRING, b"v", 5.0).digest == KeyState(STRING, b"v", None).digest
    assert KeyState(STRING, b"v").digest != KeyState(STRING, b"w").digest


@pytest.mark.parametrize(
    "a, b, same",
    [
        (None, None, True),
        (100.0, 100.9, True),
        (100.0, 101.0, True),  # exactly the tolerance
        (100.0, 101.5, False),
        (101.5, 100.0, False),
        (100.0, None, False),
        (None, 100.0, False),
    ],
)
def test_same_as_tolerates_one_second_of_expiry_drift(a, b, same):
    assert KeyState(STRING, b"v", a).same_as(KeyState(STRING, b"v", b)) is same


def test_same_as_needs_the_same_value():
    assert not KeyState(STRING, b"v", 100.0).same_as(KeyState(STRING, b"w", 100.0))
    assert not KeyState(STRING, b"fv").same_as(KeyState(HASH, ((b"f", b"v"),)))
    assert KeyState(STRING, b"v", 100.0).same_as(KeyState(STRING, b"v", 103.0), tolerance=5)


def test_same_as_digest_compares_with_a_state_known_by_digest_and_expiry():
    state = KeyState(STRING, b"v", 100.0)
    assert state.same_as_digest(KeyState(STRING, b"v").digest, 100.5)
    assert not state.same_as_digest(KeyState(STRING, b"v").digest, 102.0)
    assert not state.same_as_digest(KeyState(STRING, b"v").digest, None)
    assert not state.same_as_digest(KeyState(STRING, b"w").digest, 100.0)


# -- write_args ------------------------------------------------------------------------


def test_write_args_string_with_absolute_expiry():
    assert KeyState(STRING, b"v").write_args(NOW) == [b"string", b"0", b"v"]
    at = NOW + 2.5
    assert KeyState(STRING, b"v", at).write_args(NOW) == [b"string", b"%d" % round(at * 1000), b"v"]


def test_write_args_expiry_is_whole_milliseconds():
    state = KeyState(STRING, b"v", 1700000001.0004)
    assert state.write_args(1700000000.0) == [b"string", b"1700000001000", b"v"]


def test_write_args_hash_is_flat_pairs():
    state = KeyState(HASH, ((b"a", b"1"), (b"b", b"2")), 1700000010.0)
    assert state.write_args(1700000000.0) == [b"hash", b"1700000010000", b"a", b"1", b"b", b"2"]


@pytest.mark.parametrize(
    "state",
    [
        KeyState(STRING, b"v", NOW),
        KeyState(STRING, b"v", NOW - 5),
        KeyState(HASH, ((b"f", b"v"),), NOW - 0.5),
    ],
)
def test_already_expired_key_is_written_as_absent(state):
    assert state.write_args(NOW) == [b"none", b"0"]


@pytest.mark.parametrize("state", [ABSENT, KeyState("ReJSON-RL", None, None), KeyState("module", None, NOW + 9)])
def test_absent_or_unsupported_key_is_written_as_absent(state):
    assert state.write_args(NOW) == [b"none", b"0"]


# -- round trip through the scripts' conventions ----------------------------------------

expiries = st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e7))
states = st.one_of(
    st.builds(lambda v, e: (STRING, v, e), st.binary(), expiries),
    st.builds(
        lambda d, e: (HASH, tuple(sorted(d.items())), e),
        st.dictionaries(st.binary(), st.binary(), min_size=1, max_size=8),
        expiries,
    ),
)


@SETTINGS
@given(states, st.floats(min_value=0, max_value=2e9))
def test_written_state_reads_back_the_same(spec, now):
    kind, value, ttl = spec
    state = KeyState(kind, value, None if ttl is None else now + ttl)
    kind_arg, expiry_arg, *values = state.write_args(now)
    # WRITE_SCRIPT takes 0 for "no expiry" where PEXPIRETIME (hence READ_SCRIPT) answers -1
    read = from_reply([kind_arg, b"-1" if expiry_arg == b"0" else expiry_arg, *values], now)
    assert (read.kind, read.value) == (kind, value)
    assert read.digest == state.digest
    if ttl is None:
        assert read.expire_at is None
    else:
        # whole milliseconds, rounded to the nearest (1e-6: float noise at 2e9 s)
        assert abs(read.expire_at - state.expire_at) <= 0.0005 + 1e-6
    assert read.same_as(state)


# -- digests computed in pieces (big keys) ---------------------------------------


def _pieces(items, cuts):
    """``items`` cut at the (sorted, deduplicated) positions ``cuts``."""
    bounds = [0] + sorted({c % (len(items) + 1) for c in cuts}) + [len(items)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


_binary = st.binary(max_size=6)


@st.composite
def _big_values(draw):
    kind = draw(st.sampled_from([HASH, LIST, SET, ZSET, STREAM]))
    n = draw(st.sampled_from([0, 1, 7, DIGEST_CHUNK - 1, DIGEST_CHUNK, DIGEST_CHUNK + 1, 2 * DIGEST_CHUNK + 3]))
    if kind == STREAM:
        value = tuple((b"%d-0" % i, tuple(draw(st.lists(_binary, max_size=4)))) for i in range(n))
    elif kind in (HASH, ZSET):
        value = tuple(sorted((b"f%d" % i, b"%d" % draw(st.integers(0, 9))) for i in range(max(n, 1))))
    else:
        value = tuple(b"e%d" % (i // 2 if kind == LIST else i) for i in range(max(n, 1)))
    return KeyState(kind, value)


@settings(max_examples=60, deadline=None)
@given(_big_values(), st.lists(st.integers(min_value=0), max_size=6))
def test_digest_in_pieces_is_the_digest_of_the_whole(key_state, cuts):
    items = items_of(key_state.kind, key_state.value)
    digester = Digester(key_state.kind)
    for piece in _pieces(items, cuts):
        digester.add(piece)
    assert digester.digest() == content_digest(key_state)


def test_list_digest_depends_on_order_across_chunks():
    a = tuple(b"%d" % i for i in range(DIGEST_CHUNK + 5))
    b = a[: DIGEST_CHUNK - 1] + (a[DIGEST_CHUNK],) + (a[DIGEST_CHUNK - 1],) + a[DIGEST_CHUNK + 1 :]
    assert content_digest(KeyState(LIST, a)) != content_digest(KeyState(LIST, b))


def test_big_key_header_from_a_reply():
    states, tags = split_reply([b"big", b"1700000000000", b"", b"2", b"hash", b"123456"], 1, 0)
    assert states == [BigState(HASH, 123456, 1700000000.0)] and tags == [None]
    assert states[0].big and not KeyState(HASH, ((b"f", b"v"),)).big
    with pytest.raises(StateError):
        split_reply([b"big", b"-1", b"", b"1", b"hash"], 1, 0)


def test_a_hub_tag_comes_with_its_key():
    states, tags = split_reply([b"string", b"-1", b"1795000000000001", b"1", b"v", b"none", b"-2", b"", b"0"], 2, 0)
    assert states == [KeyState(STRING, b"v"), KeyState("none")]
    assert tags == [1795000000000001, None]


# segments of the read script's reply: plain strings (the batch's usual
# case, read in a few passes), and others that take the slow way
_segments = st.one_of(
    st.tuples(st.binary(max_size=8), st.sampled_from([b"", b"17"])).map(
        lambda vt: [b"string", b"-1", vt[1], b"1", vt[0]]
    ),
    st.just([b"string", b"1700000000000", b"", b"1", b"x"]),
    st.just([b"none", b"-2", b"", b"0"]),
    st.just([b"hash", b"-1", b"5", b"2", b"f", b"v"]),
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(_segments, max_size=12))
def test_a_batch_read_is_each_segment_as_from_reply_reads_it(segments):
    reply = [item for segment in segments for item in segment]
    states, tags = split_reply(reply, len(segments), 0)
    assert states == [from_reply(segment[:2] + segment[4:], 0) for segment in segments]
    assert tags == [int(segment[2]) if segment[2] else None for segment in segments]


@pytest.mark.parametrize(
    "reply",
    [
        [b"string", b"-1", b"x1", b"1", b"v"],  # a tag that is no number
        [b"string", b"-1", b"", b"1", None],  # a value that is no string
        [b"string", b"-1", b"", b"1", b"v", b"stray"],
    ],
)
def test_a_bad_batch_read_is_an_error(reply):
    with pytest.raises(StateError):
        split_reply(reply, 1, 0)


def test_chunks_shrink_when_items_are_big_and_grow_back():
    from redisrepl.big_keys import next_count

    assert next_count(1000, 1000 * 100, most=1000, limit=4000) == 40  # 100-byte items: 40 fit
    assert next_count(1000, 1000 * 10**6, most=1000, limit=4000) == 1  # never below one
    assert next_count(40, 400, most=1000, limit=4000) == 80  # small again: grows
    assert next_count(1000, 10, most=1000, limit=4000) == 1000  # up to the most
    assert next_count(40, 2000, most=1000, limit=4000) == 40  # about right: kept
