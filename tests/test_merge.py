"""The reconcile's decisions, generations and the deletion limit (pure)."""

import pytest

from redisrepl.epochs import Generation, SideEpoch, is_lost, lost_windows, parse_hist
from redisrepl.merge import Decision, DeleteLimit, Mode, decide
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
    # changed here since: the change goes, as a change
    assert decide(b"new", b"old", entry(b"a", 160), LOST) == Decision(LOCAL)


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


def test_a_site_back_from_a_snapshot_does_not_bring_back_what_the_hub_deleted_since():
    """A snapshot can hold a value with an older record of its key (records
    trail copies by a request): a tombstone, say, of a deletion before
    it. The value was copied, then deleted again (on the hub at stamp 300),
    and the site goes back to the snapshot. The hub's stamp of its deletion
    tells it is newer than the record: the value is not copied back."""
    local_lost = Mode(two_way=True, local_lost=True, recovery_start=250)
    tombstone = entry(b"", 120)
    assert decide(b"v", None, tombstone, local_lost, tag=300) == Decision(held=REMOTE)  # a deletion: held back
    # the run after it, as usual: both changed since the record, the winner's
    assert decide(b"v", None, tombstone, TWO_WAY, tag=300) == Decision(REMOTE, deletes=True)
    assert side(b"v", None, b"", Mode(two_way=True, winner=LOCAL), tag=300, stamp=120) == LOCAL
    # no later write on the hub (its stamp not past the record's, or unknown): the value is new
    assert decide(b"v", None, tombstone, local_lost, tag=120) == Decision(LOCAL)
    assert decide(b"v", None, tombstone, local_lost) == Decision(LOCAL)
    assert decide(b"v", None, entry(b"", 0), local_lost, tag=300) == Decision(LOCAL)  # a record without a stamp
    # no record at all: after a wipe, what the site holds was written since;
    # after a restart from a snapshot, older than what the hub was given in its window
    rolled_back = Mode(two_way=True, local_lost=True, local_rolled_back=True, recovery_start=250)
    assert decide(b"v", None, None, local_lost, tag=300) == Decision(LOCAL)
    assert decide(b"v", None, None, rolled_back, tag=300) == Decision(held=REMOTE)
    assert decide(b"v", b"w", None, rolled_back, tag=300) == Decision(REMOTE)
    assert decide(b"v", None, None, rolled_back) == Decision(LOCAL)  # nothing the hub wrote since
    assert decide(b"v", b"w", None, rolled_back) == Decision(LOCAL)


def test_the_same_state_written_again_on_the_hub_is_a_change():
    assert side(b"b", b"a", b"a", tag=300, stamp=100) == REMOTE  # both changed: the winner
    assert side(b"b", b"a", b"a", tag=100, stamp=100) == LOCAL  # the state recorded
    assert side(b"a", b"a", b"a", tag=300, stamp=100) is None


def test_a_run_after_a_loss_deletes_nothing():
    """It holds its deletions back (the run after it decides them again)."""
    assert decide(None, b"a", entry(b"a", 120), LOST) == Decision(held=LOCAL)
    local_lost = Mode(two_way=True, local_lost=True)
    assert decide(b"a", None, entry(b"a", 120), local_lost) == Decision(held=REMOTE)
    assert decide(b"a", None, entry(b"a", 120), local_lost).side is None
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
