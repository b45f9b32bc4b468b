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
