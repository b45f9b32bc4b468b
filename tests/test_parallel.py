"""The communicator adapter without MPI: a plain process gets the serial communicator and
never initializes MPI; launcher variables select MPI."""

import numpy as np
import pytest
import torch

from slmc_hpc.parallel import comm as comm_mod
from slmc_hpc.parallel.allreduce import sum_gradients, parameter_checksum
from slmc_hpc.parallel.comm import SerialComm, launched_with_several_ranks, world


def test_plain_process_uses_the_serial_communicator(monkeypatch):
    for var in comm_mod.LAUNCHER_SIZE_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not launched_with_several_ranks()
    assert isinstance(world(), SerialComm)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert not launched_with_several_ranks()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_with_several_ranks()


def test_serial_collectives_are_identities():
    c = SerialComm()
    a = np.arange(3.0)
    out = c.allreduce_sum(a)
    assert np.array_equal(out, a) and out is not a
    assert c.allgather(5) == [5] and c.bcast("x") == "x"


def test_serial_gradient_sum_keeps_gradients_and_checksum_sees_bits():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    p.grad = torch.full((3,), 2.0, dtype=torch.float64)
    sum_gradients([p], SerialComm())
    assert torch.equal(p.grad, torch.full((3,), 2.0, dtype=torch.float64))
    m = torch.nn.Linear(2, 2).double()
    before = parameter_checksum(m)
    with torch.no_grad():
        m.weight[0, 0] = torch.nextafter(m.weight[0, 0], torch.tensor(10.0, dtype=torch.float64))
    assert parameter_checksum(m) != before


def test_on_rank0_returns_the_result_and_reraises_only_the_named_errors():
    from slmc_hpc.parallel.comm import SerialComm, on_rank0

    comm = SerialComm()
    assert on_rank0(comm, lambda: 7) == 7 and on_rank0(comm, lambda: 7, share=False) == 7

    def bad():
        raise KeyError("k")
    with pytest.raises(KeyError, match="k"):
        on_rank0(comm, bad, (KeyError,))
    with pytest.raises(KeyError):  # not named: it escapes as itself, uncaught
        on_rank0(comm, bad, (ValueError,))
