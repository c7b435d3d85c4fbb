"""The RESP2 parser: any reply in any chunking; anything else is a ProtocolError."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redisrepl import resp
from redisrepl.resp import (
    MAX_BULK,
    MAX_DEPTH,
    MAX_LINE,
    ErrorReply,
    ProtocolError,
    RespParser,
    encode_command,
    parse_one,
)

SETTINGS = settings(max_examples=200, deadline=None, database=None)
QUICK = settings(max_examples=100, deadline=None, database=None)  # properties the chunked tests also cover


# -- a small independent encoder: strategies yield (wire bytes, parsed value) -----


def _bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data), data


def _array(items):
    return b"*%d\r\n" % len(items) + b"".join(wire for wire, _ in items), [value for _, value in items]


_line_text = st.binary().filter(lambda b: b"\r\n" not in b)

leaves = st.one_of(
    st.binary().map(_bulk),
    _line_text.map(lambda b: (b"+" + b + b"\r\n", b)),  # simple string
    _line_text.map(lambda b: (b"-" + b + b"\r\n", ErrorReply(b))),  # error
    st.integers(-(2**63), 2**63 - 1).map(lambda i: (b":%d\r\n" % i, i)),
    st.sampled_from([(b"$-1\r\n", None), (b"*-1\r\n", None)]),  # null bulk, null array
)
replies = st.recursive(leaves, lambda children: st.lists(children, max_size=5).map(_array), max_leaves=12)


def chunks(data, draw):
    """``data`` cut at split points drawn by hypothesis."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def feed_all(parser, pieces):
    out = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


# -- well-formed input ------------------------------------------------------------


@SETTINGS
@given(replies, st.data())
def test_any_reply_in_any_chunking_parses_to_its_value(reply, data):
    wire, value = reply
    parser = RespParser()
    assert feed_all(parser, chunks(wire, data.draw)) == [value]
    assert parser.pending == 0


@SETTINGS
@given(st.lists(replies, min_size=1, max_size=4), st.data())
def test_messages_back_to_back_come_out_in_order(many, data):
    wire = b"".join(w for w, _ in many)
    parser = RespParser()
    assert feed_all(parser, chunks(wire, data.draw)) == [v for _, v in many]
    assert parser.pending == 0


@QUICK
@given(replies, replies, st.data())
def test_pending_counts_the_bytes_of_the_unfinished_reply(first, second, data):
    wire1, value1 = first
    wire2, _ = second
    cut = data.draw(st.integers(0, len(wire2) - 1))
    parser = RespParser()
    assert parser.feed(wire1 + wire2[:cut]) == [value1]
    assert parser.pending == cut


def test_byte_by_byte_reply_appears_with_its_last_byte():
    wire = b"*3\r\n$8\r\npmessage\r\n:-42\r\n$3\r\na\x00b\r\n"
    parser = RespParser()
    for i in range(len(wire) - 1):
        assert parser.feed(wire[i : i + 1]) == []
        assert parser.pending == i + 1
    assert parser.feed(wire[-1:]) == [[b"pmessage", -42, b"a\x00b"]]
    assert parser.pending == 0


def test_large_bulk_string_in_small_pieces_then_the_next_reply():
    value = bytes(range(256)) * 4096  # 1 MiB, CR and LF bytes included
    wire = b"*2\r\n$%d\r\n%s\r\n:7\r\n" % (len(value), value) + b"+OK\r\n"
    parser = RespParser()
    out = []
    for i in range(0, len(wire), 1000):
        out += parser.feed(wire[i : i + 1000])
        assert parser.pending == (i + len(wire[i : i + 1000]) if not out else 0)
    assert out == [[value, 7], b"OK"]


def test_error_reply_text():
    [reply] = RespParser().feed(b"-ERR unknown command 'FOO'\r\n")
    assert reply == ErrorReply(b"ERR unknown command 'FOO'")
    assert str(reply) == "ERR unknown command 'FOO'"


def test_line_of_exactly_max_line_bytes_is_still_waiting_for_its_end():
    parser = RespParser()
    assert parser.feed(b"+" + b"a" * MAX_LINE) == []
    assert parser.feed(b"\r\n") == [b"a" * MAX_LINE]


# -- malformed input --------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"X\r\n", id="unknown-type"),
        pytest.param(b"*1\r\n!x\r\n", id="unknown-type-nested"),
        pytest.param(b"$abc\r\n", id="bulk-length-not-a-number"),
        pytest.param(b"*1x\r\n", id="array-length-not-a-number"),
        pytest.param(b":12z\r\n", id="integer-not-a-number"),
        pytest.param(b"$\r\n", id="empty-length"),
        pytest.param(b"$3\r\nabcXY", id="bulk-not-crlf-terminated"),
        pytest.param(b"$3\r\nabc\n\r", id="bulk-terminated-lf-cr"),
        pytest.param(b"$-2\r\n", id="bulk-negative-length"),
        pytest.param(b"*-5\r\n", id="array-negative-length"),
        pytest.param(b"$%d\r\n" % (MAX_BULK + 1), id="bulk-too-long"),
        pytest.param(b"+" + b"a" * (MAX_LINE + 1), id="line-too-long-without-crlf"),
        pytest.param(b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n", id="nested-too-deep"),
    ],
)
def test_malformed_input_is_a_protocol_error(wire):
    with pytest.raises(ProtocolError):
        RespParser().feed(wire)


def test_over_long_line_is_detected_before_its_end_arrives():
    parser = RespParser()
    parser.feed(b"-")
    with pytest.raises(ProtocolError):
        for _ in range(MAX_LINE // 1000 + 1):
            parser.feed(b"e" * 1000)


def test_nesting_up_to_the_limit_is_accepted():
    wire = b"*1\r\n" * MAX_DEPTH + b":1\r\n"
    value = 1
    for _ in range(MAX_DEPTH):
        value = [value]
    assert RespParser().feed(wire) == [value]


@pytest.mark.parametrize("wire", [b"$ 3\r\nabc\r\n", b"$+3\r\nabc\r\n", b":1_000\r\n", b"*\t1\r\n:1\r\n"])
def test_lengths_and_integers_are_plain_decimal(wire):
    with pytest.raises(ProtocolError):
        RespParser().feed(wire)


def test_over_long_line_is_rejected_whatever_the_chunking():
    wire = b"+" + b"a" * (MAX_LINE + 10) + b"\r\n"
    with pytest.raises(ProtocolError):
        RespParser().feed(wire[:-2])  # the line without its CRLF yet: rejected
    with pytest.raises(ProtocolError):
        RespParser().feed(wire)  # the same line in one piece


_garbage_tokens = st.sampled_from(
    [b"*", b"$", b":", b"+", b"-", b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"-1", b"-2", b"x", b"\xff"]
)


@SETTINGS
@given(st.one_of(st.binary(), st.lists(_garbage_tokens, max_size=40).map(b"".join)), st.data())
def test_garbage_raises_nothing_but_protocol_error(garbage, data):
    parser = RespParser()
    try:
        replies = feed_all(parser, chunks(garbage, data.draw))
    except ProtocolError:
        return
    assert isinstance(replies, list)
    assert 0 <= parser.pending <= len(garbage)


# -- parse_one and encode_command ------------------------------------------------


@QUICK
@given(replies)
def test_parse_one_returns_the_single_reply(reply):
    wire, value = reply
    assert parse_one(wire) == value


@QUICK
@given(replies, st.binary(min_size=1))
def test_parse_one_rejects_trailing_bytes(reply, extra):
    with pytest.raises(ProtocolError):
        parse_one(reply[0] + extra)


@QUICK
@given(replies, st.data())
def test_parse_one_rejects_incomplete_input(reply, data):
    wire, _ = reply
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(ProtocolError):
        parse_one(wire[:cut])


def test_parse_one_rejects_two_replies():
    with pytest.raises(ProtocolError):
        parse_one(b":1\r\n:2\r\n")


_args = st.one_of(st.binary(), st.text(), st.integers())


def _as_bytes(arg):
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, int):
        return str(arg).encode()
    return arg


@SETTINGS
@given(st.lists(_args, max_size=8))
def test_encode_command_is_an_array_of_bulk_strings(args):
    assert parse_one(encode_command(*args)) == [_as_bytes(a) for a in args]


def test_encode_command_spells_long_and_many_arguments():
    args = [b"x" * 5000, b"", *(b"v%d" % i for i in range(3000)), "\u00e9", 12]
    expected = b"".join(_bulk(_as_bytes(a))[0] for a in args)
    assert encode_command(*args) == b"*%d\r\n" % len(args) + expected


@pytest.mark.parametrize("arg", ["text", 7, 1.5, None])
def test_encode_bulks_takes_bytes_only(arg):
    with pytest.raises(TypeError):
        resp.encode_bulks([b"ok", arg])


@QUICK
@given(st.lists(st.one_of(st.none(), st.binary(max_size=8)), min_size=1, max_size=300), st.data())
def test_long_arrays_of_nulls_and_strings_parse_in_any_chunking(values, data):
    # as HMGET answers for fields mostly absent: runs of nulls among strings
    wire = b"*%d\r\n" % len(values) + b"".join(b"$-1\r\n" if v is None else _bulk(v)[0] for v in values)
    parser = RespParser()
    assert feed_all(parser, chunks(wire, data.draw)) == [values]
    assert parser.pending == 0


# -- the fast path (one split of the buffer) agrees with the item-by-item parser --

_crlf_bulk = (
    st.lists(st.sampled_from([b"a", b"\r\n", b"\r", b"\n", b"$1", b"*2", b":1", b"+"]), max_size=6)
    .map(b"".join)
    .map(_bulk)
)
_flat_arrays = st.lists(st.one_of(st.binary(max_size=8).map(_bulk), _crlf_bulk), max_size=40).map(_array)


def _outcome(pieces):
    parser = RespParser()
    out = []
    try:
        for piece in pieces:
            out.append(("ok", parser.feed(piece), parser.pending))
    except ProtocolError as e:
        # the replies before the error; what is pending after it means
        # nothing (the stream is closed on a protocol error)
        out.append(("error", e.replies))
    return out


@SETTINGS
@given(st.lists(st.one_of(replies, _crlf_bulk, _flat_arrays), min_size=1, max_size=5), st.binary(max_size=6), st.data())
def test_fast_path_and_item_by_item_parser_agree(many, tail, data):
    wire = b"".join(w for w, _ in many) + tail
    pieces = chunks(wire, data.draw)
    fast = _outcome(pieces)
    scan, scan_items = resp._scan, resp._scan_items
    resp._scan = resp._scan_items = lambda *args: 0  # the item-by-item parser alone
    try:
        slow = _outcome(pieces)
    finally:
        resp._scan, resp._scan_items = scan, scan_items
    assert fast == slow


# -- linear whatever the chunking; limits ---------------------------------------------


def _cpu_to_parse(wire, step):
    import time

    parser = RespParser()
    started = time.process_time()
    out = []
    for i in range(0, len(wire), step):
        out += parser.feed(wire[i : i + step])
    return time.process_time() - started, out


@pytest.mark.parametrize("item", [b"v" * 100, b"x" * 20_000])
def test_a_large_reply_in_small_chunks_costs_about_what_it_costs_at_once(item):
    """40 MB of an array fed 64 KB at a time: the parts already parsed are
    not parsed again (it was quadratic: 29 s of CPU against 0.07 s)."""
    count = 40 * 1024 * 1024 // (len(item) + 10)
    wire = b"*%d\r\n" % count + (b"$%d\r\n%s\r\n" % (len(item), item)) * count
    whole, [reply] = _cpu_to_parse(wire, len(wire))
    chunked, [same] = _cpu_to_parse(wire, 64 * 1024)
    assert same == reply and len(reply) == count
    assert chunked < 5 * whole + 0.5, (chunked, whole)


def test_nested_arrays_in_progress_keep_their_place():
    wire = b"*2\r\n*3\r\n$1\r\na\r\n:2\r\n*1\r\n$0\r\n\r\n+OK\r\n"
    parser = RespParser()
    out = []
    for i in range(len(wire)):
        out += parser.feed(wire[i : i + 1])
        if not out:
            assert parser.pending == i + 1
    assert out == [[[b"a", 2, [b""]], b"OK"]]
    assert parser.pending == 0


def test_a_reply_over_the_limit_is_refused_before_it_is_whole():
    parser = RespParser(max_reply=1000)
    assert parser.feed(b"*4\r\n$8\r\npmessage\r\n$3\r\nns*\r\n") == []
    with pytest.raises(ProtocolError, match="more than 1000 bytes"):
        parser.feed(b"$5000\r\n" + b"k" * 600)  # announced too long: refused at its header
    parser = RespParser(max_reply=1000)
    with pytest.raises(ProtocolError, match="more than 1000 bytes"):
        for _ in range(200):
            parser.feed(b"$3\r\nabc\r\n" if _ else b"*1000\r\n")  # many small items
    parser = RespParser(max_bulk=10)
    with pytest.raises(ProtocolError, match="bad bulk length"):
        parser.feed(b"$11\r\n")
    # and replies under the limit pass, on the fast path too
    parser = RespParser(max_reply=1000)
    event = b"*4\r\n$8\r\npmessage\r\n$3\r\nns*\r\n$4\r\nns:a\r\n$3\r\nset\r\n"
    assert parser.feed(event * 3) == [[b"pmessage", b"ns*", b"ns:a", b"set"]] * 3


# -- scan_pmessages: a subscriber's events, a burst at a time --------------------

_PATTERN = b"__keyspace@0__:ns:*"


def _event(key, event=b"set", pattern=_PATTERN):
    return encode_command(b"pmessage", pattern, b"__keyspace@0__:ns:" + key, event)


@pytest.mark.parametrize("count", [3, 30])  # a step per event, and the columns' passes
@pytest.mark.parametrize(
    ("odd", "last"),
    [
        (_event(b"a\r\n$2"), False),  # CRLF in the channel, the next line a header that fits
        (_event(b"k", b"s\r\n$1"), False),  # CRLF in the message
        (_event(b"k", pattern=b"other:*"), False),
        (b"+PONG\r\n", False),
        (_event(b"k")[:-3], True),  # cut by the end of the read
    ],
)
def test_scan_pmessages_takes_the_events_before_anything_else_exactly(count, odd, last):
    before = [_event(b"k%d" % i) for i in range(count)]
    data = b"".join(before) + odd + (b"" if last else _event(b"z") * 3)
    events, taken = resp.scan_pmessages(data, _PATTERN)
    assert events == [(b"__keyspace@0__:ns:k%d" % i, b"set") for i in range(count)]
    assert taken == len(b"".join(before))


_WHOLE = _event(b"k1")


@pytest.mark.parametrize("cut", range(len(_WHOLE)))
def test_every_start_of_an_event_may_be_one(cut):
    assert resp.pmessage_begins(_WHOLE[:cut], _PATTERN)


@pytest.mark.parametrize(
    "start",
    [
        b"+PONG",
        b"+PONG\r\n",
        b"*3\r\n$10\r\npsubscribe",
        b"*4\r\n$8\r\npmessageX",
        b"*4\r\n$8\r\npmessage\r\n$19\r\nother",
        _WHOLE[:42] + b"x",  # a header that is no number
        b"*4\r\n$8\r\npmessage\r\n$19\r\n" + _PATTERN + b"\r\n$2\r\nabc",  # longer than its header says
        _WHOLE,  # whole: nothing more to wait for
    ],
)
def test_anything_else_is_not_the_start_of_an_event(start):
    assert not resp.pmessage_begins(start, _PATTERN)


def test_scan_pmessages_takes_a_burst_whole():
    data = b"".join(_event(b"k%d" % i, b"hset") for i in range(1000))
    events, taken = resp.scan_pmessages(data, _PATTERN)
    assert len(events) == 1000 and events[-1] == (b"__keyspace@0__:ns:k999", b"hset")
    assert taken == len(data)
