#!/usr/bin/env python3
"""The Transformer's training loss pass by pass, against identity layers, on fixed pairs.

Why wide or deep layers train or not (analysis/DEPTH_STUDY.md, "A learning rate that trains
every width and depth"). Reads the pairs that ``model_capacity.py --pairs-file F.npz`` wrote
(current configuration, proposal, F_β of each), fits the Transformer of CONFIG (with the
widths and depth given here) on ``--fit`` pairs before the last ``--held`` and prints, after
every pass, the training loss with the head refitted by least squares (as a round ends, see
training.TorchTrainer), as a multiple of the identity layers' (the head alone), and the
held-out σ (the spread of the exact test's log-ratio). The minibatch steps are those of
TorchTrainer.train: AdamW on the layers, the head of all training data refitted at the start
of every pass where a minibatch is too small to fit it; ``--warmup K`` raises the learning
rate linearly over the first K steps. No round ends, so no layers are swapped for the
identity: this shows what the round's passes do.

    OMP_NUM_THREADS=1 python analysis/training_curve.py analysis/capacity_l8.toml runs/pairs_l8.npz \\
        --heads 4 --gate-channels 8 --layers 2 --learning-rate 0.01 --batch-size 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from slmc_hpc.assemble import build_network, build_physics
from slmc_hpc.config import load
from slmc_hpc.models.transformer import TransformerModel
from slmc_hpc.training.data import Samples
from slmc_hpc.training.network import TorchTrainer

from model_capacity import PHYSICS, pairs_made_by  # noqa: E402  (a sibling script, not a package)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("pairs_file", help="an .npz written by model_capacity.py --pairs-file")
    p.add_argument("--fit", type=int, default=4000, help="training pairs, the ones just before the held-out ones")
    p.add_argument("--held", type=int, default=2000, help="held-out pairs, the last ones")
    p.add_argument("--heads", type=int)
    p.add_argument("--gate-channels", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--epochs", type=int, default=8, help="passes (not the config's epochs)")
    p.add_argument("--learning-rate", type=float, help="default: the config's [training] learning_rate")
    p.add_argument("--batch-size", type=int, help="default: the config's [training] batch_size")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    p.add_argument("--seed", type=int, default=1, help="minibatch order")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load(args.config)
    changes = {k: v for k, v in (("heads", args.heads), ("gate_channels", args.gate_channels),
                                 ("layers", args.layers)) if v is not None}
    cfg = cfg.replace("effective_model", **changes) if changes else cfg
    if cfg.effective_model.layers < 1 or args.fit < 1 or args.held < 2 or args.epochs < 1:
        raise SystemExit("need at least 1 layer, 1 training pair, 2 held-out pairs and 1 pass")
    learning_rate = args.learning_rate or cfg.training.learning_rate
    batch_size = args.batch_size or cfg.training.batch_size
    lattice = build_physics(cfg).lattice
    with np.load(args.pairs_file) as saved:
        beta, d = float(saved["beta"]), {k: saved[k] for k in ("X", "Y", "XR", "YR")}
        made_by = saved["made_by"] if "made_by" in saved else None
    if made_by is None or not np.array_equal(made_by[PHYSICS], pairs_made_by(cfg, 0, 0)[PHYSICS]):
        raise SystemExit(f"{args.pairs_file} was not made by model_capacity.py with this config's lattice, model "
                         "and first temperature")
    if args.fit + args.held > len(d["Y"]):
        raise SystemExit(f"{args.pairs_file} holds {len(d['Y'])} pairs, fewer than --fit + --held")
    n = len(d["Y"])
    fit, held = slice(n - args.held - args.fit, n - args.held), slice(n - args.held, n)
    net = build_network(cfg, lattice, beta)
    trainer = TorchTrainer(net, 1, learning_rate, cfg.training.weight_decay, batch_size, seed=args.seed, loss="pair")
    data = trainer._tensors(Samples(d["X"][fit], d["Y"][fit], d["XR"][fit], d["YR"][fit],
                                    np.full(args.fit, beta)), beta)
    use = trainer._fitted_columns(data[4].numpy())
    target = d["Y"][held] - d["YR"][held]

    def sigma() -> float:
        model = TransformerModel.frozen(net, beta)
        return beta * float(np.std(target - (model.energy(d["X"][held]) - model.energy(d["XR"][held]))))

    with torch.no_grad():
        start = {k: v.clone() for k, v in net.state_dict().items()}
        net.make_identity()
        identity = trainer._fit_head(data, use)
        print(f"{net.n_parameters()} parameters; identity layers: training loss {identity:.3e}, sigma {sigma():.3f}")
        net.load_state_dict(start)
    n_batches = max(1, -(-args.fit // batch_size))
    per_batch = args.fit / n_batches >= 4 * int(use.sum())  # as TorchTrainer.train decides
    generator = torch.Generator().manual_seed(args.seed)
    step, t0 = 0, time.perf_counter()
    for epoch in range(args.epochs):
        if not per_batch:
            with torch.no_grad():
                head = trainer._global_head(*trainer._design(*data), use)
        for idx in torch.tensor_split(torch.randperm(args.fit, generator=generator), n_batches):
            if args.warmup:
                for group in trainer.optimizer.param_groups:
                    group["lr"] = learning_rate * min(1.0, (step + 1) / args.warmup)
            design, y = trainer._design(*(None if a is None else a[idx] for a in data))
            if per_batch:
                head = trainer._global_head(design, y, use)
            loss = (((design @ head - y) / lattice.N) ** 2).sum() / len(idx)
            trainer.optimizer.zero_grad()
            loss.backward()
            trainer.optimizer.step()
            step += 1
        with torch.no_grad():
            refitted = trainer._fit_head(data, use)
        print(f"pass {epoch + 1}: {step} steps, training loss {refitted:.3e} ({refitted / identity:.3f}x the "
              f"identity's), sigma {sigma():.3f}, {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
