"""Layering: every import inside sppdet points to the same layer or a lower one (sppdet/layering.py)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Iterator, List, Tuple

from sppdet.layering import LAYERS, LAZY_EXPORTS, layer_of

PACKAGE = Path(__file__).resolve().parents[1] / "sppdet"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module)`` of every import in the file, in functions too. For
    ``from X import name`` both ``X`` and ``X.name`` (which may be a submodule) are given."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


@functools.lru_cache(maxsize=None)  # both tests read the same walk
def _violations(package: Path = PACKAGE) -> Tuple[List[str], List[str]]:
    upward, unassigned = [], []
    for path in sorted(package.rglob("*.py")):
        name = _module_name(path, package)
        own = layer_of(name)
        if own is None:
            unassigned.append(name)
            continue
        for line, target in _imports(path, name):
            if target != "sppdet" and not target.startswith("sppdet."):
                continue
            other = layer_of(target)
            if other is None:  # "sppdet.<name>" from "from sppdet import name": not a module unless claimed
                continue
            if any(target == t or target.startswith(t + ".") for t in LAZY_EXPORTS.get(name, ())):
                continue
            if other[0] > own[0]:
                where = path.relative_to(package.parent).as_posix()
                upward.append(f"{where}:{line}: {name} ({own[1]}) imports {target} ({other[1]})")
    return upward, unassigned


def test_every_module_has_a_layer():
    _, unassigned = _violations()
    assert not unassigned, "modules no layer claims (add them to LAYERS in sppdet/layering.py):\n" + "\n".join(
        unassigned
    )


def test_no_upward_imports():
    upward, _ = _violations()
    assert not upward, "imports pointing to a higher layer:\n" + "\n".join(upward)


def test_walker_sees_an_upward_import(tmp_path):
    """The checker itself: planted data -> engine imports (in a function, relative, absolute and
    ``from . import``) are reported; downward and same-layer ones are not."""
    pkg = tmp_path / "sppdet"
    for sub in ("data", "engine", "utils"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "bad.py").write_text("def f():\n    from ..engine import run\n\n\nimport sppdet.engine.x\n")
    (pkg / "data" / "__init__.py").write_text("from .. import engine\n")
    (pkg / "engine" / "good.py").write_text("from ..data import bad\nfrom ..utils import comm\nfrom . import run\n")
    upward, unassigned = _violations(pkg)
    assert upward == [
        "sppdet/data/__init__.py:1: sppdet.data (data) imports sppdet.engine (engine)",
        "sppdet/data/bad.py:5: sppdet.data.bad (data) imports sppdet.engine.x (engine)",
        "sppdet/data/bad.py:2: sppdet.data.bad (data) imports sppdet.engine (engine)",
        "sppdet/data/bad.py:2: sppdet.data.bad (data) imports sppdet.engine.run (engine)",
    ]
    assert unassigned == []


def test_layer_order_is_the_documented_one():
    names = [name for name, _ in LAYERS]
    assert names.index("structures") < names.index("layers") < names.index("data") < names.index("proposals")
    assert names.index("proposals") < names.index("modeling") < names.index("evaluation") < names.index("engine")
    assert names[-1] == "top"
