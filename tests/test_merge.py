"""The reconcile's decisions, generations and the deletion limit (pure)."""

import attrs
import pytest

from redisrepl.epochs import Generation, SideEpoch, is_lost, lost_windows, parse_hist
from redisrepl.merge import NOTHING, STALE, Decision, DeleteLimit, Mode, decide
from redisrepl.sides import LOCAL, REMOTE
from redisrepl.synced import SyncedEntry

TWO_WAY = Mode(two_way=True)
ONE_WAY = Mode(two_way=False)


def entry(digest, stamp=100, evicted=None):
    return SyncedEntry(digest, stamp, evicted)


def side(local, remote, synced, mode=TWO_WAY, tag=None, stamp=100, evicted=None):
    e = entry(synced, stamp, evicted) if synced is not None else None
    return decide(local, remote, e, mode, tag).side


# -- two-way: the three-way merge ---------------------------------------------------


@pytest.mark.parametrize(
    "local,remote,synced,expect",
    [
        (b"a", b"a", b"a", None),
        (b"a", b"a", None, None),  # equal: nothing to copy
        (b"b", b"a", b"a", LOCAL),  # changed locally only
        (b"a", b"b", b"a", REMOTE),  # changed remotely only
        (None, b"a", b"a", LOCAL),  # deleted locally: stays deleted
        (b"a", None, b"a", REMOTE),  # deleted remotely: stays deleted
        (b"a", None, None, LOCAL),  # new locally
        (None, b"a", None, REMOTE),  # new remotely
        (b"b", b"c", b"a", REMOTE),  # changed on both: the winner
        (b"b", None, b"a", REMOTE),  # changed here, deleted there: the winner
        (b"x", b"a", b"a", None),  # a type not replicated: left alone
    ],
)
def test_two_way_decisions(local, remote, synced, expect):
    assert side(local, remote, synced) == expect


def test_deletions_are_marked_as_such():
    assert decide(None, b"a", entry(b"a"), TWO_WAY) == Decision(LOCAL, deletes=True)
    assert decide(b"a", None, entry(b"a"), TWO_WAY) == Decision(REMOTE, deletes=True)
    assert decide(b"b", b"a", entry(b"a"), TWO_WAY) == Decision(LOCAL)


def test_local_winner():
    assert side(b"b", b"c", b"a", Mode(two_way=True, winner=LOCAL)) == LOCAL


def test_big_key_that_changed_while_digested_is_left_to_its_event():
    assert side(b"B", b"hx", b"h1") is None
    assert side(b"B", None, b"h1", ONE_WAY) is None


# -- evictions -----------------------------------------------------------------------


def test_an_evicted_key_is_neither_deleted_elsewhere_nor_refilled():
    assert side(None, b"a", b"a", evicted=LOCAL) is None
    assert side(None, b"a", b"a", ONE_WAY, evicted=LOCAL) is None
    assert side(b"a", None, b"a", evicted=REMOTE) is None
    # a change on the other side since is still a change
    assert side(None, b"b", b"a", evicted=LOCAL) == REMOTE
    # and without the flag the same absence is a deletion
    assert side(None, b"a", b"a") == LOCAL


# -- after a loss of the hub -------------------------------------------------------------

LOST = Mode(two_way=True, hub_lost=True, windows=((150, 200),), recovery_start=200)


def test_what_the_hub_lost_is_refilled_not_deleted_or_reverted():
    # the hub lost the key (its state was held at stamp 160, in the window)
    assert decide(b"a", None, entry(b"a", 160), LOST) == Decision(LOCAL, origin=160)
    # or went back to an older state of it: refilled, not copied back here
    assert decide(b"a", b"old", entry(b"a", 160), LOST) == Decision(LOCAL, origin=160)
    # changed here since: the change goes, as a refill of a state known
    # just after what this site knew (a site that knows a later state
    # still refills over it)
    assert decide(b"new", b"old", entry(b"a", 160), LOST) == Decision(LOCAL, origin=161)
    # deleted here since: the deletion goes, as a refill too
    assert decide(None, b"old", entry(b"a", 160), LOST) == Decision(LOCAL, origin=161, deletes=True)


def test_what_the_hub_kept_is_merged_as_usual_after_its_loss():
    # held at stamp 120, before what was lost: the hub's change is an edit
    assert decide(b"a", b"b", entry(b"a", 120), LOST) == Decision(REMOTE)
    # an old record without a stamp (an older redisrepl) counts as kept
    assert decide(b"a", b"b", entry(b"a", 0), LOST) == Decision(REMOTE)


def test_a_key_written_on_the_hub_since_its_loss_is_an_edit():
    assert decide(b"a", b"b", entry(b"a", 160), LOST, tag=250) == Decision(REMOTE)


def test_the_fresher_of_two_refills_wins():
    # another site refilled the key with a state it knew since 120; this
    # site knows a later one (160): refilled again, with this site's
    assert decide(b"a", b"b", entry(b"a", 160), LOST, tag=120) == Decision(LOCAL, origin=160)
    # and the other way round: the hub's refill is the fresher
    assert decide(b"a", b"b", entry(b"a", 110), LOST, tag=120) == Decision(REMOTE)
    # refill precedence holds in a normal run too, while the window is open
    normal = Mode(two_way=True, recovery_start=200)
    assert decide(b"a", b"b", entry(b"a", 160), normal, tag=120) == Decision(LOCAL, origin=160)


def test_an_older_refill_is_no_change_of_the_hub():
    # this site recorded "a" as held by the hub at 160, then changed it here
    # (while its daemon was away); the hub lost it and another site refilled
    # a state it knew since 120: the change here is refilled over it, as
    # known just after what this site knew
    assert decide(b"new", b"b", entry(b"a", 160), LOST, tag=120) == Decision(LOCAL, origin=161)
    # a deletion here since: refilled too (a refill may delete after a loss)
    assert decide(None, b"b", entry(b"a", 160), LOST, tag=120) == Decision(LOCAL, origin=161, deletes=True)
    normal = Mode(two_way=True, recovery_start=200)
    assert decide(None, b"b", entry(b"a", 160), normal, tag=120) == Decision(LOCAL, origin=161, deletes=True)
    # a key made again here since its deletion at 160
    assert decide(b"new", b"b", SyncedEntry(b"", 160), normal, tag=120) == Decision(LOCAL, origin=161)
    # and one-way alike
    one_way = Mode(two_way=False, recovery_start=200)
    assert decide(None, b"b", entry(b"a", 160), one_way, tag=120) == Decision(LOCAL, origin=161, deletes=True)
    # a refill fresher than what this site knows is a change: changed on
    # both sides, the winner's
    assert decide(b"new", b"b", entry(b"a", 110), normal, tag=120) == Decision(REMOTE)
    # as is an edit made on the hub since its loss
    assert decide(b"new", b"b", entry(b"a", 160), normal, tag=250) == Decision(REMOTE)
    # and once the window is over, no state on the hub is told a refill
    closed = Mode(two_way=True, recovery_start=None)
    assert decide(b"new", b"b", entry(b"a", 160), closed, tag=120) == Decision(REMOTE)


def test_no_refill_of_a_big_key_changing_nor_of_an_evicted_one():
    # a big key that changed type while digested: its event is handled
    assert decide(b"B", b"b", entry(b"a", 160), LOST, tag=120) == NOTHING
    assert decide(None, b"B", entry(b"a", 160), LOST, tag=120) == NOTHING
    assert decide(b"B", None, entry(b"a", 160), LOST) == NOTHING
    # evicted here: its record stands in for it, but is nothing to refill
    # the hub with (not a deletion either), nor is the hub's older state copied back
    assert decide(None, b"old", entry(b"a", 160, evicted=LOCAL), LOST) == NOTHING
    assert decide(None, b"old", entry(b"a", 160, evicted=LOCAL), LOST, tag=120) == NOTHING
    assert decide(None, None, entry(b"a", 160, evicted=LOCAL), LOST) == NOTHING


def test_refills_of_changes_made_meanwhile_end_alike_in_any_order():
    """Site A changed a key while away (it knew "d" at 160); site C wrote
    "f" on the hub at 180, then went away too; site B knew "d" and changed
    nothing; the hub is wiped. Whichever of them comes back first, they end
    with "f" (the later-stamped state; with --winner remote, the winner of
    a change on both sides too)."""
    normal = Mode(two_way=True, recovery_start=200)
    # A first: its change goes as a refill of a state known since 161; C's
    # refill of 180 is taken over it (the hub's rule: older states only),
    # and A then takes it
    assert decide(b"a-new", None, entry(b"d", 160), LOST) == Decision(LOCAL, origin=161)
    assert decide(b"f", b"a-new", entry(b"f", 180), LOST, tag=161) == Decision(LOCAL, origin=180)
    assert decide(b"a-new", b"f", entry(b"a-new", 161), normal, tag=180) == Decision(REMOTE)
    # B first: its refill of "d" at 160 is older than A's change, which
    # follows it: A refills over it, as above
    assert decide(b"d", None, entry(b"d", 160), LOST) == Decision(LOCAL, origin=160)
    assert decide(b"a-new", b"d", entry(b"d", 160), LOST, tag=160) == Decision(LOCAL, origin=161)
    # deleted at A instead: the same, and C's "f" stays
    assert decide(None, b"d", entry(b"d", 160), LOST, tag=160) == Decision(LOCAL, origin=161, deletes=True)
    assert decide(b"f", None, entry(b"f", 180), LOST, tag=161) == Decision(LOCAL, origin=180)
    assert decide(None, b"f", SyncedEntry(b"", 161), normal, tag=180) == Decision(REMOTE)
    # C first: its refill of 180 is on the hub; B's and A's are refused
    # (older than it), and A sees a change on both sides
    assert decide(b"f", None, entry(b"f", 180), LOST) == Decision(LOCAL, origin=180)
    assert decide(b"a-new", b"f", entry(b"d", 160), normal, tag=180) == Decision(REMOTE)


def test_a_deletion_the_hub_lost_is_refilled_not_undone():
    tombstone = SyncedEntry(b"", 160)
    # deleted here and on the hub at 160; the hub went back to before it
    assert decide(None, b"old", tombstone, LOST) == Decision(LOCAL, origin=160, deletes=True)
    # a tombstone the hub kept (120, before the window) is merged as usual:
    # the key was made again on the hub since
    assert decide(None, b"new", SyncedEntry(b"", 120), LOST) == Decision(REMOTE)
    # and as an entry it is no record at all: a new key of that name is new
    assert decide(b"a", None, SyncedEntry(b"", 120), TWO_WAY) == Decision(LOCAL)


def test_no_refill_once_the_recovery_window_is_over():
    closed = Mode(two_way=True, hub_lost=True, windows=((150, 200),), recovery_start=None)
    assert decide(b"a", b"old", entry(b"a", 160), closed) == Decision(REMOTE)


def test_after_the_local_side_lost_its_record_its_present_keys_are_new():
    local_lost = Mode(two_way=True, local_lost=True)
    assert side(b"new", b"old", None, local_lost) == LOCAL
    assert side(None, b"old", None, local_lost) == REMOTE
    # with its record (restarted from a snapshot, record and all): as usual
    assert side(b"a", b"b", b"a", local_lost) == REMOTE


ROLLED_BACK = Mode(two_way=True, local_lost=True, local_rolled_back=True, recovery_start=250)


def test_a_site_back_from_a_snapshot_takes_what_both_sides_held_since():
    """A snapshot can hold a value whose record is older (a tombstone, an
    earlier state) or missing: records trail copies. When the local Redis
    went back to one and this daemon recorded the key later than that (it
    copied it since), the value is older than what both sides held then:
    the hub's state is taken, whatever --winner says; a deletion is not
    made in this run, but the value is recorded for the next run to delete."""
    for record in (entry(b"", 120), entry(b"a", 120), None):
        for mode in (ROLLED_BACK, attrs.evolve(ROLLED_BACK, winner=LOCAL), attrs.evolve(ROLLED_BACK, two_way=False)):
            assert decide(b"v", b"w", record, mode, 300, recorded_later=True) == Decision(REMOTE)
            assert decide(b"v", None, record, mode, 300, recorded_later=True) == STALE
            assert decide(b"v", None, record, mode, None, recorded_later=True) == STALE  # (window closed)
    # the next run, in normal mode, over the value so recorded: deleted (two-way), left (one-way)
    assert decide(b"v", None, entry(b"v", 0), TWO_WAY, tag=300) == Decision(REMOTE, deletes=True)
    assert decide(b"v", None, entry(b"v", 0), ONE_WAY, tag=300) == NOTHING


def test_a_value_is_kept_without_evidence_that_it_is_older():
    # no later record by this daemon (away, evicted from its memory, a write not copied yet)
    assert decide(b"v", None, entry(b"", 120), ROLLED_BACK, 300) == Decision(LOCAL)
    assert decide(b"v", None, None, ROLLED_BACK, 300) == Decision(LOCAL)
    assert decide(b"v", b"w", entry(b"v", 120), ROLLED_BACK, 300) == Decision(REMOTE)  # (as always)
    # not rolled back (a wipe: no records), a mirror, an evicted key, a key changing on the hub
    wiped = Mode(two_way=True, local_lost=True, recovery_start=250)
    assert decide(b"v", None, None, wiped, 300, recorded_later=True) == Decision(LOCAL)
    mirror = attrs.evolve(ROLLED_BACK, two_way=False, mirror=True)
    assert decide(b"v", None, entry(b"", 120), mirror, 300, recorded_later=True) == Decision(LOCAL)
    evicted = entry(b"v", 120, evicted=LOCAL)
    assert not decide(b"v", None, evicted, ROLLED_BACK, 300, recorded_later=True).stale
    assert decide(b"v", b"B", entry(b"", 120), ROLLED_BACK, 300, recorded_later=True) == NOTHING
    # outside a loss, evidence or not, the merge is as always
    assert decide(b"v", None, entry(b"", 120), TWO_WAY, 300, recorded_later=True) == Decision(LOCAL)


def test_a_run_after_a_loss_deletes_nothing():
    assert decide(None, b"a", entry(b"a", 120), LOST) == NOTHING
    local_lost = Mode(two_way=True, local_lost=True)
    assert decide(b"a", None, entry(b"a", 120), local_lost) == NOTHING
    assert decide(b"a", None, None, local_lost) == Decision(LOCAL)


# -- one-way ------------------------------------------------------------------------------


def test_one_way_deletes_only_what_this_site_wrote():
    assert decide(None, b"a", entry(b"a"), ONE_WAY) == Decision(LOCAL, deletes=True)
    assert side(None, b"a", None, ONE_WAY) is None  # never written here: left alone
    assert side(None, b"b", b"a", ONE_WAY) is None  # changed on the hub since: left alone


def test_one_way_asserts_its_keys_but_does_not_revert_the_hub():
    assert side(b"a", None, None, ONE_WAY) == LOCAL  # new here
    assert side(b"b", b"a", b"a", ONE_WAY) == LOCAL  # changed here
    assert side(b"a", b"y", None, ONE_WAY) == LOCAL  # never synchronised: this site's
    assert side(b"a", b"b", b"a", ONE_WAY) is None  # changed on the hub since: kept
    assert side(b"a", None, b"a", ONE_WAY) is None  # deleted on the hub since: kept so


def test_one_way_mirror_deletes_everything_else():
    mirror = Mode(two_way=False, mirror=True)
    assert decide(None, b"a", None, mirror) == Decision(LOCAL, deletes=True)
    assert side(b"a", b"b", b"a", mirror) == LOCAL


def test_one_way_local_loss_is_refilled_from_the_hub():
    lost = Mode(two_way=False, local_lost=True)
    assert side(None, b"a", None, lost) == REMOTE
    assert side(None, b"B", None, lost) == REMOTE
    assert side(b"a", b"b", b"a", lost) == REMOTE  # went back to an older state here


# -- generations ----------------------------------------------------------------------------


def test_lost_windows_follow_the_generations_after_the_confirmed_one():
    hist = b"g1:0:100;g2:150:200;g3:300:400"
    assert parse_hist(hist) == [(b"g1", 0, 100), (b"g2", 150, 200), (b"g3", 300, 400)]
    assert lost_windows(hist, b"g3") == []
    assert lost_windows(hist, b"g2") == [(300, 400)]
    assert lost_windows(hist, b"g1") == [(150, 200), (300, 400)]
    # a generation no longer in the record: everything before the first one known is lost too
    assert lost_windows(hist, b"g0") == [(0, 100), (0, 100), (150, 200), (300, 400)]
    assert lost_windows(b"", b"g0") == []
    assert is_lost(160, [(150, 200)]) and not is_lost(150, [(150, 200)]) and not is_lost(200, [(150, 200)])


def test_a_new_generation_is_noticed_once():
    seen = []
    epoch = SideEpoch(REMOTE, lambda side, generation: seen.append((side, generation.id)))
    epoch.observe(Generation(b"g1", 1, 1))
    epoch.observe(Generation(b"g1", 2, 1))
    assert seen == []  # the first one known, then the same one
    epoch.observe(Generation(b"g2", 3, 3))
    epoch.observe(Generation(b"g2", 4, 3))
    assert seen == [(REMOTE, b"g2")]
    assert not epoch.changed  # nothing confirmed yet
    epoch.confirmed = b"g2"
    epoch.observe(Generation(b"g3", 5, 5))
    assert epoch.changed and seen[-1] == (REMOTE, b"g3")


def test_synced_entries_round_trip():
    for e in (
        SyncedEntry(b"abc@123", 456),
        SyncedEntry(b"habc", 7, LOCAL),
        SyncedEntry(b"x", 0, REMOTE),
        SyncedEntry(b"", 99),
    ):
        assert SyncedEntry.decode(e.encode()) == e
    assert SyncedEntry.decode(b"legacy-digest@99") == SyncedEntry(b"legacy-digest@99", 0)
    assert SyncedEntry.decode(None) is None


# -- the deletion limit -----------------------------------------------------------------------


def test_delete_limit():
    default = DeleteLimit()
    assert default.limit(50) == 100 and default.limit(10_000) == 1000
    assert DeleteLimit.parse("25%").limit(10_000) == 2500
    assert DeleteLimit.parse("7").limit(10_000) == 7
    assert DeleteLimit.parse("all").limit(10_000) is None
    for bad in ("-1", "101%", "lots"):
        with pytest.raises(ValueError):
            DeleteLimit.parse(bad)
