"""Checkpoint files: everything needed to continue the same Markov chain, bit for bit.

One HDF5 file next to the output (``<output>.ckpt``), written by rank 0 from every rank's
state: a nested tree of arrays (datasets) and scalars or strings (attributes). No pickle:
a damaged or foreign file is a clear error, never code execution. Written atomically: a
temporary file is written, flushed to disk (fsync) and renamed over the old checkpoint, so
a crash at any moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from .config import ConfigError

FORMAT = "slmc-hpc-checkpoint/3"
# /2 added round_pending (a training round to redo on resume); a /1 checkpoint has none pending.
# Versions that know only /1 refuse /2 rather than silently skip a pending round.
# /3 (0.8.2) stores each path tuner's candidates, which changed; versions up to 0.8.1 read a
# tuner by its trial count alone and refuse /3 rather than map its trials to other paths.
READABLE = (FORMAT, "slmc-hpc-checkpoint/2", "slmc-hpc-checkpoint/1")


def checkpoint_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def save_tree(group: h5py.Group, tree: dict) -> None:
    """Dicts become groups, NumPy arrays datasets, and numbers, strings and bools attributes.
    Keys whose value is None are left out (readers use .get)."""
    for key, value in tree.items():
        if value is None:
            continue
        if isinstance(value, dict):
            save_tree(group.create_group(key), value)
        elif isinstance(value, np.ndarray):
            group.create_dataset(key, data=value)
        elif isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_)):
            group.attrs[key] = value
        else:
            raise TypeError(f"checkpoint entry {group.name}/{key}: cannot store {type(value).__name__}")


def load_tree(group: h5py.Group) -> dict:
    tree = {key: load_tree(item) if isinstance(item, h5py.Group) else item[()] for key, item in group.items()}
    for key, value in group.attrs.items():
        tree[key] = value.item() if isinstance(value, np.generic) else value
    return tree


def tree_digest(tree: dict) -> str:
    """SHA-256 over every key, dtype, shape and value of the tree, in sorted key order: a
    flipped bit anywhere in the stored state is detected on reading, not resumed from."""
    h = hashlib.sha256()

    def feed(node, prefix):
        for key in sorted(node):
            value = node[key]
            if value is None:
                continue
            h.update(f"{prefix}/{key}".encode())
            if isinstance(value, dict):
                feed(value, f"{prefix}/{key}")
            elif isinstance(value, str):
                h.update(b"s" + value.encode())
            else:
                a = np.ascontiguousarray(value)
                h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
    feed(tree, "")
    return h.hexdigest()


def write_checkpoint(path: str | Path, tree: dict) -> None:
    """Atomically replace ``path`` by a checkpoint holding ``tree``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        save_tree(f, tree)
        stored = load_tree(f)  # the digest is of what was stored, as a reader will see it
        del stored["format"]
        f.attrs["sha256"] = tree_digest(stored)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # the data are on disk before the rename makes them the checkpoint
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # and the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass


def read_checkpoint(path: str | Path) -> dict:
    """The tree of a checkpoint; ConfigError (exit 2) for a missing, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint {str(path)!r} to resume from")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") not in READABLE:
                raise ConfigError(f"{str(path)!r} is not a slmc-hpc checkpoint (format "
                                  f"{f.attrs.get('format')!r}, expected {FORMAT!r})")
            tree = load_tree(f)
    except (ConfigError, MemoryError):  # too big to hold is not "damaged"
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes h5py raise
        raise ConfigError(f"checkpoint {str(path)!r} is damaged or unreadable ({exc}); the output file is "
                          f"unchanged. Start again with --overwrite") from None
    stored = tree.pop("sha256", None)
    tree.pop("format", None)
    if stored != tree_digest(tree):
        raise ConfigError(f"checkpoint {str(path)!r} is damaged (its contents do not match their SHA-256); "
                          f"the output file is unchanged. Start again with --overwrite")
    return tree
