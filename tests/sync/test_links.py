"""LinkIndex: which source paths share content (hard links, symlinks), kept up to date by scans and stats."""

from __future__ import annotations

from agent.sync.links import LinkIndex


def test_empty_index_costs_nothing_and_answers_nothing() -> None:
    """Without links the index stays empty whatever is looked at, and nothing is related."""
    index = LinkIndex()
    index.update({"a": object(), "gone": None}, {}, {})
    index.replace({}, {})
    assert not index and index.related(["a", "gone"]) == []
    assert index.by_inode == {} and index.links_to == {}


def test_an_edit_reaches_other_names_and_symlinks_to_them() -> None:
    """A changed file relates to its hard links, the symlinks to it and the symlinks to its hard links."""
    index = LinkIndex()
    index.replace({"t": (1, 7), "h": (1, 7), "x": (1, 8)}, {"l": "t", "lh": "h", "lo": "other"})
    assert index.related(["t"]) == ["h", "l", "lh"]
    assert index.related(["h"]) == ["l", "lh", "t"]
    assert index.related(["x"]) == [] and index.related(["other"]) == ["lo"]
    assert index.related(["t", "h"]) == ["l", "lh"]


def test_same_inode_on_another_device_is_not_a_link() -> None:
    """Names are grouped by (device, inode): equal inode numbers on two filesystems are unrelated files."""
    index = LinkIndex()
    index.replace({"a": (1, 7), "b": (2, 7)}, {})
    assert index.related(["a"]) == [] and index.related(["b"]) == []


def test_stats_repoint_and_remove_links() -> None:
    """A fresh stat moves a re-pointed symlink to its new target, and a path gone (or under a gone folder) is
    forgotten, while a stat of a still-linked file keeps its peers."""
    index = LinkIndex()
    index.replace({"t": (1, 7), "h": (1, 7), "d/h2": (1, 7)}, {"l": "t", "d/l2": "t"})
    index.update({"t": object()}, {"t": (1, 7)}, {})  # an edit of t: still linked to h and d/h2
    assert index.related(["t"]) == ["d/h2", "d/l2", "h", "l"]
    index.update({"l": object()}, {}, {"l": "u"})  # l now points at u
    assert index.links_to == {"t": {"d/l2"}, "u": {"l"}} and index.related(["u"]) == ["l"]
    index.update({"d": None, "h": None}, {}, {})  # folder d and the name h are gone
    assert index.related(["t"]) == [] and index.inode_of == {"t": (1, 7)}
    assert index.target_of == {"l": "u"}
    index.update({"l": None}, {}, {})
    assert index.target_of == {} and index.links_to == {}


def test_a_new_hard_link_is_learnt_from_the_stat_of_either_name() -> None:
    """A file that got a second name after the scan is related once a stat shows both names with one inode."""
    index = LinkIndex()
    index.update({"new": object()}, {"new": (1, 9)}, {})  # `ln t new`: the event names only the new path
    index.update({"t": object()}, {"t": (1, 9)}, {})  # later edit of t: its stat now shows st_nlink 2
    assert index.related(["t"]) == ["new"]


def test_a_full_scan_replaces_all_but_what_is_under_unreadable_folders() -> None:
    """A full scan is the whole truth, except under folders it could not read, where the old entries stay."""
    index = LinkIndex()
    index.replace({"a": (1, 1), "b": (1, 1), "lock/c": (1, 2), "lock/d": (1, 2)}, {"lock/l": "a", "m": "a"})
    index.replace({"x": (1, 3), "y": (1, 3)}, {}, keep_under=["lock"])
    assert index.related(["x"]) == ["y"] and index.related(["lock/c"]) == ["lock/d"]
    assert index.related(["a"]) == ["lock/l"] and "m" not in index.target_of
