"""Summing gradients over ranks with few, large Allreduce calls (flat buckets, not one call
per tensor), and cheap checks that all ranks hold the same parameters."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

BUCKET_BYTES = 8 * 2**20


def sum_gradients(params, comm, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Replace every parameter's .grad by its sum over ranks: the gradient of a loss that each
    rank computed as its share of one global mean (missing grads count as zero)."""
    params = [p for p in params if p.requires_grad]
    if comm.size == 1 or not params:
        return
    bucket, size = [], 0
    for p in params + [None]:
        if p is not None:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            bucket.append(p)
            size += p.numel() * p.element_size()
        if bucket and (p is None or size >= bucket_bytes):
            flat = torch.cat([q.grad.reshape(-1) for q in bucket]).detach().cpu().numpy()
            summed = torch.from_numpy(comm.allreduce_sum(flat))
            offset = 0
            for q in bucket:
                q.grad.copy_(summed[offset: offset + q.numel()].reshape(q.shape))
                offset += q.numel()
            bucket, size = [], 0


def broadcast_parameters(module: torch.nn.Module, comm, root: int = 0) -> None:
    """Make every rank's parameters equal to the root's."""
    if comm.size == 1:
        return
    flat = torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy()
    flat = comm.bcast(flat, root=root)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.as_tensor(flat), module.parameters())


def parameter_checksum(module: torch.nn.Module) -> str:
    """A digest of the exact bits of all parameters."""
    flat = torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy()
    return hashlib.sha256(np.ascontiguousarray(flat).tobytes()).hexdigest()


def assert_same_parameters(module: torch.nn.Module, comm) -> None:
    sums = comm.allgather(parameter_checksum(module))
    if len(set(sums)) != 1:
        raise RuntimeError(f"model parameters differ between ranks (checksums {sums}); aborting")
