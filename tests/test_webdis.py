"""How commands are spelled for Webdis, checked against a model of how Webdis reads them."""

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redisrepl.webdis import command_bytes, command_path, escape, keyspace_key, keyspace_pattern, unescape

SETTINGS = settings(max_examples=200, deadline=None, database=None)

FORMATS = ("raw", "json", "msg", "txt")


def webdis_reads(path):
    """(db, args, format) as Webdis 0.1.9 reads a command path (see WEBDIS.md):
    an unescaped ``?`` ends the command, ``/`` separates arguments, a known
    suffix on the last argument is the format, then each argument is decoded."""
    path = path.partition("?")[0]
    parts = path.split("/")
    db = None
    if parts[0].isdigit():
        db = int(parts.pop(0))
    fmt = None
    stem, dot, suffix = parts[-1].rpartition(".")
    if dot and suffix in FORMATS:
        parts[-1], fmt = stem, suffix
    return db, [unescape(p) for p in parts], fmt


# -- escape / unescape -------------------------------------------------------------


@SETTINGS
@given(st.binary())
def test_escape_output_is_only_safe_characters(data):
    assert re.fullmatch(r"[A-Za-z0-9_:%-]*", escape(data))


@SETTINGS
@given(st.binary())
def test_unescape_inverts_escape(data):
    assert unescape(escape(data)) == data


@SETTINGS
@given(
    st.lists(
        st.one_of(st.binary(max_size=70), st.sampled_from([b"v1", b"ns:k", b"", b"x" * 80, b"{ns}", b"a/b", b"1.5"])),
        max_size=150,
    )
)
def test_a_command_of_many_arguments_is_each_argument_escaped_as_needed(args):
    path = command_bytes(args, fmt=b"")
    assert [unescape(part) for part in path.split(b"/")] == (args or [b""])
    assert re.fullmatch(rb"[A-Za-z0-9_:%/-]*", path)


def test_escape_spelling():
    assert escape(b"ab-_Z9") == "ab-_Z9"
    assert escape(b"a.b/c?d#e+f%g h\x00\xff") == "a%2Eb%2Fc%3Fd%23e%2Bf%25g%20h%00%FF"
    assert escape("é") == "%C3%A9"  # str: UTF-8
    assert escape(-12) == "-12"  # int: decimal


def test_unescape_as_webdis_decodes():
    assert unescape("a+b") == b"a b"
    assert unescape("%2e%2E") == b".."
    assert unescape("100%") == b"100%"  # a lone or invalid % is kept
    assert unescape("%zz%4") == b"%zz%4"


# -- command_path ------------------------------------------------------------------


def test_command_path_layout():
    assert command_path([b"GET", b"k"]) == "GET/k.raw"
    assert command_path([b"SET", b"a", b"b"]) == "SET/a/b.raw"
    assert command_path([b"GET", b"k"], db=3) == "3/GET/k.raw"
    assert command_path([b"GET", b"k"], db=0) == "0/GET/k.raw"
    assert command_path([b"GET", b"k"], fmt="json") == "GET/k.json"
    assert command_path([b"GET", b"k"], fmt=None) == "GET/k"


@pytest.mark.parametrize(
    "awkward",
    [
        b"v.raw",
        b"v.json",
        b"a/b",
        b"a?b=c",
        b"a#frag",
        b"a+b",
        b"50%",
        b"%41",
        b"two words",
        b"nul\x00byte",
        b"",
        b"\xff\xfe",
        b"../..",
        b"1",
    ],
)
@pytest.mark.parametrize("position", ["middle", "last"])
def test_awkward_argument_stays_one_byte_exact_argument(awkward, position):
    args = [b"SET", awkward, b"v"] if position == "middle" else [b"SET", b"k", awkward]
    path = command_path(args, db=2)
    assert webdis_reads(path) == (2, args, "raw")
    assert len(path.split("/")) == 1 + len(args)


@SETTINGS
@given(st.lists(st.binary(), min_size=1, max_size=6), st.one_of(st.none(), st.integers(0, 15)))
def test_any_arguments_reach_webdis_unchanged(args, db):
    path = command_path([b"EVAL", *args], db=db)
    assert webdis_reads(path) == (db, [b"EVAL", *args], "raw")
    # the only dot is the format suffix's
    assert path.count(".") == 1 and path.endswith(".raw")


# -- keyspace channels ---------------------------------------------------------------


def redis_glob_prefix(pattern):
    """The literal prefix of a glob that must be ``literal*``; fails on any other wildcard."""
    literal = bytearray()
    i = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            literal += pattern[i + 1 : i + 2]
            i += 2
            continue
        if c in (b"*", b"?", b"[", b"]"):
            assert c == b"*" and i == len(pattern) - 1, f"wildcard {c!r} at {i} in {pattern!r}"
            return bytes(literal)
        literal += c
        i += 1
    raise AssertionError(f"{pattern!r} does not end with *")


def test_keyspace_pattern_spelling():
    assert keyspace_pattern(0, b"ns:") == b"__keyspace@0__:ns:*"
    assert keyspace_pattern(7, "ns:") == b"__keyspace@7__:ns:*"
    assert keyspace_pattern(1, b"a*b?c[d]e\\f") == b"__keyspace@1__:a\\*b\\?c\\[d\\]e\\\\f*"


@SETTINGS
@given(st.integers(0, 15), st.binary())
def test_keyspace_pattern_matches_exactly_the_namespace_prefix(db, namespace):
    assert redis_glob_prefix(keyspace_pattern(db, namespace)) == b"__keyspace@%d__:" % db + namespace


def test_keyspace_key():
    assert keyspace_key(b"__keyspace@0__:ns:k", 0) == b"ns:k"
    assert keyspace_key(b"__keyspace@0__:__keyspace@0__:x\xff", 0) == b"__keyspace@0__:x\xff"
    assert keyspace_key(b"__keyspace@0__:", 0) == b""


@pytest.mark.parametrize(
    "channel, db",
    [
        (b"__keyspace@1__:ns:k", 0),
        (b"__keyspace@10__:ns:k", 1),
        (b"__keyspace@1__:ns:k", 10),
        (b"__keyevent@0__:set", 0),
        (b"ns:k", 0),
        (b"x__keyspace@0__:ns:k", 0),
    ],
)
def test_keyspace_key_of_another_channel_is_none(channel, db):
    assert keyspace_key(channel, db) is None


@given(st.lists(st.one_of(st.binary(max_size=80), st.text(max_size=10), st.integers()), min_size=1, max_size=8))
@example([b"x" * 70, b"."])  # a long argument with nothing to escape, beside one with something
@example([b"x" * 70 + b".", b"k:1" * 40])
def test_command_bytes_is_each_argument_escaped_and_joined(args):
    assert command_bytes(args, db=2) == ("2/" + "/".join(escape(a) for a in args) + ".raw").encode("ascii")


@pytest.mark.parametrize("odd", [b"a/b", b"1.5", b"{", b"x y", b"%", b"\xff", b"y" * 70 + b"."])
@pytest.mark.parametrize("where", [0, 31, 32, 50, 99])
def test_one_argument_to_escape_among_many_safe_ones_is_escaped(odd, where):
    args = [b"k:%d" % i for i in range(100)]
    args[where] = odd
    path = command_bytes(args, fmt=b"")
    assert [unescape(part) for part in path.split(b"/")] == args
    assert re.fullmatch(rb"[A-Za-z0-9_:%/-]*", path)
