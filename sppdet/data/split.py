"""A seeded train/val split for a dataset that comes without one, kept as split files.

A labelImg, CVAT or Roboflow VOC export has no ``ImageSets/Main``. Training then holds out
``data.val_fraction`` of the annotated images for validation, chosen by a seeded shuffle, and
writes both lists as ordinary VOC split files (one id per line) into ``<output_dir>/splits/``,
never into the user's data folder. A rerun, ``--resume`` and ``tools/eval.py --weights`` read
those files back, so the held-out images stay held out even if the folder gains images later.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from ..fileio import save_text

log = logging.getLogger("sppdet.data")

#: Sub-folder of a training output folder that holds the split files.
SPLIT_DIR = "splits"


def seeded_split(ids: Sequence[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """``(train_ids, val_ids)``, each sorted; ``round(n * val_fraction)`` ids go to val.

    With ``0 < val_fraction`` and at least two ids, both parts get at least one id. The result
    depends only on the sorted ids, the fraction and the seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in [0, 1), got {val_fraction}")
    pool = sorted(ids)
    n = len(pool)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = {pool[i] for i in order[:n_val]}
    return [i for i in pool if i not in val], [i for i in pool if i in val]


def split_path(output_dir: Union[str, Path], name: str) -> Path:
    """``<output_dir>/splits/<name>.txt``."""
    return Path(output_dir) / SPLIT_DIR / f"{name}.txt"


def read_ids(path: Path) -> List[str]:
    """Ids of a split file (first column, blank lines skipped)."""
    return [line.split()[0] for line in path.read_text(encoding="utf-8-sig").splitlines() if line.split()]


def load_or_make_split(
    output_dir: Union[str, Path],
    names: Tuple[str, str],
    ids: Sequence[str],
    val_fraction: float,
    seed: int,
    source: str = "the dataset",
) -> Dict[str, Path]:
    """Split files ``{train_name: path, val_name: path}`` in ``output_dir/splits``.

    When both exist they are reused (every id they list must be in ``ids``); otherwise
    :func:`seeded_split` makes them and they are written atomically.
    """
    train_name, val_name = names
    paths = {train_name: split_path(output_dir, train_name), val_name: split_path(output_dir, val_name)}
    if all(p.is_file() for p in paths.values()):
        known = set(ids)
        listed = 0
        for p in paths.values():
            for i in read_ids(p):
                listed += 1
                if i not in known:
                    raise DataError(
                        f"{p}: id '{i}' is not an annotated image of {source}; delete {p.parent} to make a new split"
                    )
        if listed < len(known):
            log.warning(
                "%d annotated image(s) of %s are in neither %s nor %s (added after the split was made): not used",
                len(known) - listed,
                source,
                paths[train_name].name,
                paths[val_name].name,
            )
        log.info("split: reusing %s and %s", paths[train_name], paths[val_name])
        return paths
    train, val = seeded_split(ids, val_fraction, seed)
    save_text("".join(f"{i}\n" for i in train), paths[train_name])
    save_text("".join(f"{i}\n" for i in val), paths[val_name])
    log.info(
        "split: %s has no split files; %d images for %s, %d for %s (data.val_fraction=%g, seed %d), written to %s",
        source,
        len(train),
        train_name,
        len(val),
        val_name,
        val_fraction,
        seed,
        paths[train_name].parent,
    )
    return paths
