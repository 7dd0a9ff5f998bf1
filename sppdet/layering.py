"""The layer order of the sppdet package, defined once: a module may import only its own layer or
layers listed before it (``tests/test_layering.py`` walks every import and enforces it).

Prefixes are matched longest first, so ``sppdet.structures.boxes`` belongs to ``sppdet.structures``.
A new module belongs under one of these prefixes; a new top-level module needs a line here.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

#: (layer name, module prefixes), lowest first.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("errors", ("sppdet.errors",)),
    ("fileio", ("sppdet.fileio",)),
    ("structures", ("sppdet.structures",)),
    ("utils", ("sppdet.utils", "sppdet.visualize")),
    ("config", ("sppdet.config",)),
    ("layers", ("sppdet.layers",)),
    ("data", ("sppdet.data",)),
    ("proposals", ("sppdet.proposals",)),
    ("modeling", ("sppdet.modeling", "sppdet.svm")),
    ("evaluation", ("sppdet.evaluation",)),
    ("engine", ("sppdet.engine",)),
    (
        "top",
        (
            "sppdet.api",
            "sppdet.benchmarks",
            "sppdet.classification",
            "sppdet.cli",
            "sppdet.engine.demo",  # the demo orchestrates the whole pipeline through the Detector API
            "sppdet.export",
            "sppdet.layering",
        ),
    ),
]

#: The package root's ``__init__`` imports nothing from the package at import time, so it sits at
#: the bottom.
_ROOT = "sppdet"

#: The one allowed exception: the package root re-exports the top-level API lazily (a PEP 562
#: module ``__getattr__``: ``from sppdet import Detector``), so no module below ever loads it.
LAZY_EXPORTS: Dict[str, Tuple[str, ...]] = {_ROOT: ("sppdet.api",)}


def layer_rank() -> Dict[str, int]:
    """Module prefix -> its layer's position in :data:`LAYERS` (0 = bottom)."""
    return {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}


def layer_of(module: str) -> Optional[Tuple[int, str]]:
    """``(rank, layer name)`` of a dotted module name inside sppdet; ``None`` for one no layer
    claims (the package root ``sppdet`` itself is rank 0)."""
    if module == _ROOT:
        return 0, LAYERS[0][0]
    ranks = layer_rank()
    for prefix in sorted(ranks, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return ranks[prefix], LAYERS[ranks[prefix]][0]
    return None
