"""Trie label trees: invariants, prefix grouping against a brute-force reference, leaf caps, prefix queries."""

from __future__ import annotations

import random

import numpy as np
import pytest

from indexing.tree import LabelTree
from indexing.trie import PrefixTree, TrieError, trie_index, trie_tree


def level_groups(tree: LabelTree) -> list[list[frozenset[int]]]:
    """Label sets of the nodes of every internal level, in node order."""
    out = []
    node = np.arange(tree.nr_labels)
    per_level = []
    for t in range(tree.depth - 1, 0, -1):
        node = np.asarray(tree.parents(t))[node]
        per_level.append(node.copy())
    for anc in per_level[::-1]:
        groups = [set() for _ in range(int(anc.max()) + 1)]
        for label, j in enumerate(anc.tolist()):
            groups[j].add(label)
        out.append([frozenset(g) for g in groups])
    return out


def reference_groups(labels, max_depth, max_leaf_size, casefold=True) -> list[list[frozenset[int]]]:
    """Brute force: split every unfrozen group by the first t characters of its keys, in sorted order."""
    keys = [s.casefold() if casefold else s for s in labels]

    def frozen(g):
        return len(g) <= max_leaf_size or len({keys[i] for i in g}) == 1

    groups = [sorted(range(len(labels)), key=lambda i: (keys[i], i))]
    if frozen(groups[0]):
        return []
    levels = []
    for t in range(1, max_depth + 1):
        nxt = []
        for g in groups:
            if t > 1 and frozen(g):
                nxt.append(g)
                continue
            by = {}
            for i in g:
                by.setdefault(keys[i][:t], []).append(i)
            nxt.extend(by[k] for k in sorted(by))
        groups = nxt
        levels.append([frozenset(g) for g in groups])
        if all(frozen(g) for g in groups):
            break
    return levels


def random_labels(rng: random.Random, n: int, alphabet: str = "abAB", max_len: int = 5) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len))))
    return sorted(out, key=lambda s: rng.random())


PECOS_TOY = ["ab", "abc", "abd", "b", "bcdef", "bcxyz"]


def test_pecos_toy_depth_two():
    tree = trie_tree(PECOS_TOY, max_depth=2, max_leaf_size=1)
    assert tree.level_sizes == (2, 3, 6)
    # leaves {ab, abc, abd}, {b}, {bcdef, bcxyz} as in PECOS's trie at depth 2 (no leaf cap)
    assert level_groups(tree)[-1] == [frozenset({0, 1, 2}), frozenset({3}), frozenset({4, 5})]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_depth,max_leaf_size", [(1, 1), (2, 3), (3, 2), (5, 4), (8, 1), (4, 100)])
def test_matches_brute_force_reference(seed, max_depth, max_leaf_size):
    labels = random_labels(random.Random(seed), 60)
    tree = trie_tree(labels, max_depth=max_depth, max_leaf_size=max_leaf_size)
    assert level_groups(tree) == reference_groups(labels, max_depth, max_leaf_size)


def test_invariants_every_label_once_and_prefixes_shared():
    labels = random_labels(random.Random(1), 200, alphabet="abcAB", max_len=7)
    pt = trie_index(labels, max_depth=6, max_leaf_size=3)
    tree = pt.tree
    LabelTree([tree.parents(t) for t in range(tree.depth)])  # re-validates the invariants
    assert tree.nr_labels == len(labels)
    assert sorted(tree.label_order().tolist()) == list(range(len(labels)))
    assert len(pt.prefixes) == tree.depth - 1
    for t, groups in enumerate(level_groups(tree)):
        for j, g in enumerate(groups):
            p = pt.prefixes[t][j]
            keys = {labels[i].casefold() for i in g}
            assert all(k.startswith(p) for k in keys)
            # the longest such prefix, and exact exactly when all keys equal it
            assert pt.exact[t][j] == (keys == {p})
            if not pt.exact[t][j]:
                assert len({k[len(p)] if len(k) > len(p) else "" for k in keys}) > 1


def test_leaf_sizes_respected_when_depth_allows():
    labels = random_labels(random.Random(2), 300, alphabet="abcd", max_len=8)
    for leaf in (1, 5, 20):
        tree = trie_tree(labels, max_depth=20, max_leaf_size=leaf)
        sizes = np.bincount(tree.parents(tree.depth - 1))
        assert sizes.max() <= leaf
        # the depth is the smallest that reaches the cap
        shallower = trie_tree(labels, max_depth=tree.depth - 2, max_leaf_size=leaf) if tree.depth > 2 else None
        if shallower is not None:
            assert np.bincount(shallower.parents(shallower.depth - 1)).max() > leaf


def test_depth_cap_allows_big_leaves():
    labels = [f"a{i:03d}" for i in range(50)]
    tree = trie_tree(labels, max_depth=2, max_leaf_size=5)
    assert tree.level_sizes == (1, 1, 50)  # all share "a0": one chain, one oversized leaf


def test_small_label_set_is_one_vs_all():
    pt = trie_index(["b", "a", "c"], max_leaf_size=3)
    assert pt.tree == LabelTree.one_vs_all(3)
    assert pt.prefixes == () and pt.starts == ()
    assert pt.matching_labels("a").tolist() == [1]


def test_padding_chains_reach_the_bottom():
    labels = ["x", "ya", "yb", "yc", "yd", "ye"]
    pt = trie_index(labels, max_depth=5, max_leaf_size=2)
    tree = pt.tree
    assert tree.level_sizes == (2, 6, 6)  # "x" stops at level 1 and chains to level 2
    assert pt.prefixes == (("x", "y"), ("x", "ya", "yb", "yc", "yd", "ye"))
    assert tree.parents(1).tolist() == [0, 1, 1, 1, 1, 1]


def test_short_keys_get_an_end_of_string_group_first():
    labels = ["abc", "ab", "abd", "a", "abe"]
    pt = trie_index(labels, max_depth=3, max_leaf_size=1)
    groups = level_groups(pt.tree)
    assert groups[1] == [frozenset({3}), frozenset({0, 1, 2, 4})]
    assert groups[2] == [frozenset({3}), frozenset({1}), frozenset({0}), frozenset({2}), frozenset({4})]
    assert pt.prefixes[2] == ("a", "ab", "abc", "abd", "abe")
    assert pt.exact[2].tolist() == [True] * 5


def test_casefold_groups_case_variants():
    labels = ["Apple", "apple pie", "APPLE", "banana", "Banana split", "cherry"]
    pt = trie_index(labels, max_depth=5, max_leaf_size=1)
    assert pt.matching_labels("APP").tolist() == [0, 2, 1]  # keys "apple", "apple", "apple pie"; ties by id
    assert set(pt.matching_labels("ban").tolist()) == {3, 4}
    raw = trie_index(labels, max_depth=5, max_leaf_size=1, casefold=False)
    assert raw.matching_labels("APP").tolist() == [2]
    assert raw.matching_labels("app").tolist() == [1]


def test_equal_keys_never_split_and_tree_stops():
    labels = ["Foo", "foo", "FOO", "fOo", "bar"]
    pt = trie_index(labels, max_depth=10, max_leaf_size=1)
    assert pt.tree.depth == 2  # level 1 = {"bar"}, {4 x "foo"}: both stopped
    assert pt.prefixes == (("bar", "foo"),)
    assert pt.exact[0].tolist() == [True, True]


def test_unicode_labels():
    labels = ["Straße", "strasse", "über", "Über alles", "日本語", "日本", "ﬁsh"]
    pt = trie_index(labels, max_depth=4, max_leaf_size=1)
    LabelTree([pt.tree.parents(t) for t in range(pt.tree.depth)])
    assert set(pt.matching_labels("STRASS").tolist()) == {0, 1}  # "ß" casefolds to "ss"
    assert set(pt.matching_labels("Üb").tolist()) == {2, 3}
    assert pt.matching_labels("日本").tolist() == [5, 4]
    assert pt.matching_labels("fi").tolist() == [6]  # the ligature casefolds to "fi"


@pytest.mark.parametrize(
    "labels,match",
    [
        (["a", "b", "a"], "appears twice"),
        (["a", ""], "empty string"),
        (["a", 3], "not a string"),
        ([], "empty"),
        ("abc", "sequence of strings"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(TrieError, match=match):
        trie_tree(labels)
    assert issubclass(TrieError, ValueError)


@pytest.mark.parametrize("kw", [{"max_depth": 0}, {"max_leaf_size": 0}, {"max_depth": 2.5}, {"max_leaf_size": True}])
def test_bad_options(kw):
    with pytest.raises(TrieError):
        trie_tree(["a", "b"], **kw)


def test_deterministic_and_independent_of_input_order_up_to_ids():
    labels = random_labels(random.Random(3), 150)
    a = trie_index(labels, max_depth=4, max_leaf_size=3)
    b = trie_index(list(labels), max_depth=4, max_leaf_size=3)
    assert a.tree == b.tree and a.prefixes == b.prefixes
    rng = random.Random(4)
    perm = list(range(len(labels)))
    rng.shuffle(perm)
    c = trie_index([labels[i] for i in perm], max_depth=4, max_leaf_size=3)
    assert c.tree.level_sizes == a.tree.level_sizes and c.prefixes == a.prefixes
    # same leaf for the same label string
    assert [int(c.tree.parents(c.tree.depth - 1)[k]) for k in range(len(perm))] == [
        int(a.tree.parents(a.tree.depth - 1)[i]) for i in perm
    ]


def brute_matching_nodes(pt: PrefixTree, level: int, typed: str) -> list[int]:
    q = typed.casefold()
    anc = pt.ancestors(level)
    return sorted({int(anc[i]) for i, k in enumerate(pt.keys) if k.startswith(q)})


@pytest.mark.parametrize("seed", range(3))
def test_matching_nodes_and_consistency_against_brute_force(seed):
    rng = random.Random(seed)
    labels = random_labels(rng, 120, alphabet="abcAB", max_len=6)
    pt = trie_index(labels, max_depth=4, max_leaf_size=3)
    queries = ["", "a", "A", "ab", "abc", "ba", "cc", "cab", "zzz", "abcabc", "\U0010ffff"]
    queries += [k[: rng.randint(1, len(k))] for k in pt.keys[:20]]
    for q in queries:
        expect = sorted(i for i, k in enumerate(pt.keys) if k.startswith(q.casefold()))
        assert sorted(pt.matching_labels(q).tolist()) == expect
        for level in range(pt.tree.depth - 1):
            nodes = pt.matching_nodes(level, q).tolist()
            assert nodes == brute_matching_nodes(pt, level, q)
            # the prefix test never drops a node that holds a match
            assert all(pt.consistent(level, j, q) for j in nodes)
            # and is exact once the node's prefix is at least as long as the typed text
            for j, p in enumerate(pt.prefixes[level]):
                if len(p) >= len(q) or pt.exact[level][j]:
                    assert pt.consistent(level, j, q) == (j in nodes)
    with pytest.raises(TrieError):
        pt.matching_nodes(pt.tree.depth - 1, "a")


def test_keys_with_the_largest_code_point():
    labels = ["a\U0010ffff", "a\U0010ffffb", "ab", "b"]
    pt = trie_index(labels, max_depth=3, max_leaf_size=1)
    assert sorted(pt.matching_labels("a\U0010ffff").tolist()) == [0, 1]
    assert sorted(pt.matching_labels("a").tolist()) == [0, 1, 2]
