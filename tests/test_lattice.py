import numpy as np
import pytest

from slmc_hpc.lattice import Lattice


def test_square_shells_are_minimum_image_distances():
    lat = Lattice.from_kind("square", 6)
    assert np.allclose(lat.shell_distances, np.sqrt([1, 2, 4, 5, 8, 9, 10, 13, 18]))
    sizes = [s.shape[1] for s in lat.shell_neighbours(6)]
    assert sizes == [4, 4, 4, 8, 4, 2]  # distance 3 = L/2: +3 and -3 are one site


def test_shell_neighbour_relation_is_symmetric():
    lat = Lattice.from_kind("square", 5)
    for shell in lat.shell_neighbours(4):
        for i, row in enumerate(shell):
            for j in row:
                assert i in shell[j]


def test_bonds_cover_each_direction_once_per_site():
    lat = Lattice.from_kind("cubic", 3)
    assert lat.bonds.shape == (3 * 27, 2)
    counts = np.bincount(lat.bonds.ravel(), minlength=lat.N)
    assert np.all(counts == 6)


@pytest.mark.parametrize("kind,L", [("chain", 5), ("square", 4), ("cubic", 3)])
def test_symmetries_are_permutations_preserving_bonds(kind, L):
    lat = Lattice.from_kind(kind, L)
    bonds = {frozenset(b) for b in lat.bonds.tolist()}
    group = lat.translations() + lat.point_group()
    assert len(lat.point_group()) == {1: 2, 2: 8, 3: 48}[lat.dim]
    for p in group:
        assert sorted(p) == list(range(lat.N))
        assert {frozenset((p[i], p[j])) for i, j in lat.bonds.tolist()} == bonds


def test_bad_sizes_and_kinds():
    with pytest.raises(ValueError, match="at least 2"):
        Lattice.from_kind("square", 1)
    with pytest.raises(ValueError, match="unknown lattice kind"):
        Lattice.from_kind("honeycomb", 4)
    with pytest.raises(ValueError, match="only 5 distinct"):
        Lattice.from_kind("square", 4).shell_neighbours(6)


def _orbits_by_brute_force(lat: Lattice, n_shells: int):
    """The classes of unordered bond pairs by applying every space-group element (translation
    times point group) to every pair: the definition, O(B² N |G|)."""
    bonds, index = lat.shell_bonds(n_shells)
    a, b = np.triu_indices(len(bonds))
    canonical = None
    for t in lat.translations():
        for g in lat.point_group():
            image = index[g[t][bonds[:, 0]], g[t][bonds[:, 1]]]
            key = np.minimum(image[a], image[b]) * len(bonds) + np.maximum(image[a], image[b])
            canonical = key if canonical is None else np.minimum(canonical, key)
    _, orbit = np.unique(canonical, return_inverse=True)  # numbered by least (a, b): first in row-major order
    pair_class = np.empty((len(bonds), len(bonds)), dtype=np.int64)
    pair_class[a, b] = pair_class[b, a] = orbit.ravel()
    return bonds, pair_class


@pytest.mark.parametrize("kind,L,n_shells", [("chain", 8, 2), ("chain", 9, 3), ("square", 2, 2), ("square", 4, 5),
                                             ("square", 5, 3), ("square", 6, 4), ("cubic", 2, 3), ("cubic", 3, 2),
                                             ("cubic", 4, 3)])
def test_bond_pair_classes_equal_the_whole_space_group_search(kind, L, n_shells, monkeypatch):
    """The anchored search (classes of the pairs at the origin, copied by translation) gives
    the very table, numbering included, of the search over the whole space group; odd L and
    self-inverse bonds (2v = 0 mod L) included. Negative control: a table built without the
    point group differs."""
    lat = Lattice.from_kind(kind, L)
    bonds, pair_class = lat.bond_pair_orbits(n_shells)
    ref_bonds, ref_class = _orbits_by_brute_force(lat, n_shells)
    np.testing.assert_array_equal(bonds, ref_bonds)
    np.testing.assert_array_equal(pair_class, ref_class)
    if kind != "chain" or L > 2:
        # translations only: more, smaller classes
        monkeypatch.setattr(Lattice, "point_group", lambda self: [np.arange(self.N)])
        assert lat.bond_pair_orbits(n_shells)[1].max() > pair_class.max()


def test_bond_pair_range_keeps_the_close_classes_whole():
    """Nearest-neighbour bonds of the square lattice, midpoints (x + 1/2, y) and (x, y + 1/2):
    within 0.75 a bond pairs with itself and with the 4 perpendicular bonds at its ends
    (distance √2/2), 2 classes; within 1 also the collinear and the side-by-side parallel
    neighbours (2 more classes, 2 + 2 partners); with no range every separation (L = 8: 9
    classes of pairs of parallel bonds up to the point group's images, plus the perpendicular ones)."""
    lat = Lattice.from_kind("square", 8)
    full = lat.bond_pair_orbits(1)[1]
    for max_range, classes, partners in ((0.75, 2, 5), (1.0, 4, 9)):
        bonds, pair_class = lat.bond_pair_orbits(1, max_range)
        assert pair_class.max() + 1 == classes
        assert np.all((pair_class >= 0).sum(axis=1) == partners)
        dist = lat.bond_distances(bonds, bonds)
        np.testing.assert_array_equal(pair_class >= 0, dist <= max_range + 1e-9)
        # each kept class is a class of the full table, whole (the distance is a class property)
        for c in range(classes):
            assert len(np.unique(full[pair_class == c])) == 1
            assert np.all(pair_class[full == full[pair_class == c][0]] == c)
    assert np.all(full >= 0) and full.max() + 1 > 4


def test_bond_distance_takes_the_nearest_midpoint_of_a_half_lattice_bond():
    """At L = 4 the bond {0, (2, 0)} has midpoints (1, 0) and (-1, 0) = (3, 0); its distance to
    the bond {(1, 0), (1, 1)} (midpoint (1, 1/2)) is 1/2 by the first, not √(4 + 1/4) by the second."""
    lat = Lattice.from_kind("square", 4)
    bonds = np.array([[0, int(lat.index(np.array([2, 0])))],
                      [int(lat.index(np.array([1, 0]))), int(lat.index(np.array([1, 1])))]])
    assert lat.bond_distances(bonds, bonds)[0, 1] == pytest.approx(0.5)
    assert lat.bond_distances(bonds[1:], bonds[:1])[0, 0] == pytest.approx(0.5)
