"""The shared model over MPI ranks: each rank trains on its own share of the data, and the
result equals training on all the data in one process, with bit-identical parameters on
every rank."""

import numpy as np
import pytest
import torch

from slmc_hpc.hamiltonian import DoubleExchange
from slmc_hpc.lattice import Lattice
from slmc_hpc.models.transformer import EquivariantTransformer
from slmc_hpc.parallel.allreduce import assert_same_parameters, sum_gradients
from slmc_hpc.parallel.comm import MPIComm, SerialComm
from slmc_hpc.training.data import Samples
from slmc_hpc.training.network import TorchTrainer

pytestmark = pytest.mark.mpi


def dataset(n=240, seed=5):
    rng = np.random.default_rng(seed)
    lat = Lattice.from_kind("square", 4)
    base = np.zeros((lat.N, 3))
    base[:, 2] = np.where(lat.coords[:, 0] % 2 == 0, 1.0, -1.0)
    spins = base + 0.4 * rng.standard_normal((n, lat.N, 3))
    spins /= np.linalg.norm(spins, axis=-1, keepdims=True)
    return lat, spins, DoubleExchange(lat, J=4.0, mu=-2.5).free_energy_of(spins, 10.0)


def make_trainer(lat, comm, loss="energy"):
    net = EquivariantTransformer(lat, layers=2, heads=2, block_shells=2, attention_shells=None, shells=3,
                                 beta_ref=10.0, seed=7)
    # same minibatch order everywhere does not matter: one batch holds all the data
    return TorchTrainer(net, epochs=3, learning_rate=1e-2, weight_decay=0.0, batch_size=10**6, seed=1,
                        loss=loss, comm=comm)


def my_share(array, comm):
    return np.array_split(array, comm.size)[comm.rank]


@pytest.mark.parametrize("loss", ["energy", "pair"])
def test_distributed_round_equals_one_process_and_ranks_agree(loss):
    comm = MPIComm()
    lat, spins, F = dataset()
    full = Samples(spins[1:], F[1:], spins[:-1], F[:-1])
    mine = Samples(my_share(spins[1:], comm), my_share(F[1:], comm), my_share(spins[:-1], comm),
                   my_share(F[:-1], comm))
    empty = Samples(spins[:0], F[:0], spins[:0], F[:0])
    serial = make_trainer(lat, SerialComm(), loss)
    expected = serial.train(full, empty, 10.0)
    parallel = make_trainer(lat, comm, loss)
    result = parallel.train(mine, empty, 10.0)
    assert result.train_loss == pytest.approx(expected.train_loss, rel=1e-9)
    got = torch.nn.utils.parameters_to_vector(parallel.net.parameters())
    want = torch.nn.utils.parameters_to_vector(serial.net.parameters())
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    assert_same_parameters(parallel.net, comm)


def test_summed_gradients_equal_the_full_batch_gradient():
    comm = MPIComm()
    lat, spins, F = dataset(n=60)
    net = EquivariantTransformer(lat, layers=1, heads=2, block_shells=2, attention_shells=None, shells=3, seed=3)
    with torch.no_grad():
        net.wv.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    head = torch.linspace(-1, 1, 8, dtype=torch.float64)

    def grads(x, y, count):
        net.zero_grad()
        loss = ((net.head_features(torch.as_tensor(x), 10.0) @ head - torch.as_tensor(y)) ** 2).sum() / count
        loss.backward()
        return [p.grad.clone() for p in (net.wq, net.wk, net.wv)]

    want = grads(spins, F, len(F))
    grads(my_share(spins, comm), my_share(F, comm), len(F))
    sum_gradients([net.wq, net.wk, net.wv], comm)
    for p, w in zip((net.wq, net.wk, net.wv), want):
        assert torch.allclose(p.grad, w, rtol=1e-10, atol=1e-14)


def test_parameter_mismatch_between_ranks_is_caught_on_every_rank():
    comm = MPIComm()
    lat, _, _ = dataset(n=2)
    net = make_trainer(lat, comm).net
    assert_same_parameters(net, comm)
    if comm.rank == comm.size - 1:
        with torch.no_grad():
            net.wq.view(-1)[0] += 1e-15 * max(1.0, abs(float(net.wq.view(-1)[0])))
    with pytest.raises(RuntimeError, match="model parameters differ between ranks"):
        assert_same_parameters(net, comm)
