"""Shared pieces of the fuzz tests: mutation strategies, tiers, and the outcome check.

Every reader a user can point at a file must end in a result or in one
:class:`~sppdet.errors.SppdetError` naming the file: never another exception type, a hang
or a memory blow-up. :func:`expect_clean` enforces that around one call, with a CPU-time
alarm and an address-space limit so a runaway reader fails the test instead of the machine.

Tiers (see :data:`TIERS`): ``fast`` runs in the default suite (derandomized, a few dozen
examples per reader, every reader together well under a minute on 2 cores); ``long`` is marked
``slow`` and runs ``SPPDET_FUZZ_FACTOR`` (default 2) times as many examples, derandomized too
unless ``SPPDET_FUZZ_RANDOM=1`` (so CI is repeatable; a new finding must not fail an unrelated
change). For a deep random run: ``SPPDET_FUZZ_RANDOM=1 SPPDET_FUZZ_FACTOR=100 pytest tests/fuzz -m slow``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import resource
import signal
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sppdet.errors import SppdetError
from sppdet.utils.memory import proc_status_kb, reset_peak_rss

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TIERS = [pytest.param("fast", id="fast"), pytest.param("long", id="long", marks=pytest.mark.slow)]
LONG_FACTOR = int(os.environ.get("SPPDET_FUZZ_FACTOR", "2"))
#: CPU-time limit of one reader call (a few-kB input takes well under a second).
CALL_TIMEOUT_S = 20
#: Address space a reader call may add over what the process already maps.
MEMORY_HEADROOM = 1536 * 2**20
#: Peak-RSS growth one reader call may cause (the inputs are a few kB).
MEMORY_GROWTH = 512 * 2**20


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the real data is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (expected ../shared/data next to the repo)")
    return p


def fuzz_settings(tier: str, examples: int) -> settings:
    """Hypothesis settings of a tier: derandomized (same examples on every run) unless the
    ``long`` tier runs with ``SPPDET_FUZZ_RANDOM=1``."""
    return settings(
        max_examples=examples if tier == "fast" else examples * LONG_FACTOR,
        deadline=None,  # timing under load is noise; hangs are caught by the alarm instead
        derandomize=tier == "fast" or os.environ.get("SPPDET_FUZZ_RANDOM", "") != "1",
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def run_fuzz(tier: str, examples: int, strategy: st.SearchStrategy, check: Callable[[Any], None]) -> None:
    """Run ``check`` on ``examples`` values drawn from ``strategy`` under the tier's settings."""

    @fuzz_settings(tier, examples)
    @given(strategy)
    def inner(value: Any) -> None:
        check(value)

    inner()


# ---------------------------------------------------------------------------------------
# The outcome check


class Hang(BaseException):
    """A reader call ran past :data:`CALL_TIMEOUT_S` (BaseException: no reader may swallow it)."""


@contextlib.contextmanager
def _guards():
    def on_alarm(signum, frame):
        raise Hang(f"reader call used more than {CALL_TIMEOUT_S} s of CPU")

    # CPU time, not wall time: the shared test machine may be loaded 10x, a hang burns CPU anyway.
    old_handler = signal.signal(signal.SIGPROF, on_alarm)
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    signal.setitimer(signal.ITIMER_PROF, CALL_TIMEOUT_S)
    try:
        mapped = proc_status_kb("VmSize") * 1024
        if mapped:  # Linux; elsewhere the peak-RSS check is skipped too
            resource.setrlimit(resource.RLIMIT_AS, (mapped + MEMORY_HEADROOM, old_limit[1]))
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)


def expect_clean(call: Callable[[], Any], names: Sequence[str]) -> Optional[Any]:
    """``call()``'s result, or None after one SppdetError naming one of ``names``.

    Any other exception, a hang, or a memory blow-up (peak RSS growing by more than
    :data:`MEMORY_GROWTH`) fails the test. A reader that asks for more than the address-space
    limit and turns the MemoryError into a clear SppdetError has refused the file: that passes.
    """
    measured = reset_peak_rss()
    rss_before = proc_status_kb("VmRSS") * 1024
    try:
        with _guards(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return call()
            except SppdetError as e:
                msg = str(e)
                assert "\n" not in msg.strip(), f"error message is not one line: {msg!r}"
                assert any(n in msg for n in names), f"error does not name {list(names)}: {msg}"
                return None
    finally:
        if measured:
            grew = proc_status_kb("VmHWM") * 1024 - rss_before
            assert grew < MEMORY_GROWTH, f"peak RSS grew by {grew / 2**20:.0f} MiB reading one small file"


# ---------------------------------------------------------------------------------------
# Byte-level mutations (any file)

#: Tokens that break parsers: bad bytes, structure characters, extreme numbers.
TOKENS = [
    b"\x00",
    b"\xff",
    b"\xc3",  # a UTF-8 lead byte without its continuation
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"<",
    b">",
    b"</",
    b"&",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b",",
    b":",
    b"\n",
    b"\xe2\x80\xae",  # right-to-left override
    b"[" * 3000,
    b"{" * 3000,
]
#: Replacements for a number: negative, zero, NaN/inf spellings, overflowing, not a number.
NUMBER_TOKENS = [
    b"-",
    b"-1",
    b"0",
    b"NaN",
    b"nan",
    b"inf",
    b"-Infinity",
    b"1e309",
    b"-1e309",
    b"9" * 30,
    b"9" * 5000,
    b"4294967296",
    b"-2147483649",
    b"0x1F",
    b"abc",
]
NUMBER_RE = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@st.composite
def mutated_bytes(draw, original: bytes, max_ops: int = 4) -> bytes:
    """``original`` after 1..max_ops random edits (truncate, flip, insert, delete, duplicate...)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate", "number", "token"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS + NUMBER_TOKENS))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            n = draw(st.integers(1, 256))
            data[pos:pos] = data[pos : pos + n] * draw(st.integers(1, 3))
        elif op == "number":
            numbers = list(NUMBER_RE.finditer(data))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                data[m.start() : m.end()] = draw(st.sampled_from(NUMBER_TOKENS))
    return bytes(data)


ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "latin-1", "cp1252"]


@st.composite
def reencoded(draw, text: str) -> bytes:
    """``text`` (perhaps with a non-ASCII character added) in another encoding."""
    encoding = draw(st.sampled_from(ENCODINGS))
    if draw(st.booleans()):  # a non-ASCII character where text can hold one (after a letter)
        letters = [m.end() for m in re.finditer(r"[A-Za-z]", text)]
        if letters:
            at = letters[draw(st.integers(0, len(letters) - 1))]
            text = text[:at] + draw(st.sampled_from(["é", "ß", "€", "中"])) + text[at:]
    return text.encode(encoding, errors="replace")


def file_mutations(original: bytes, text: bool = True) -> st.SearchStrategy:
    """Byte edits of a file, and (for text files) whole-file re-encodings."""
    strategies = [mutated_bytes(original)]
    if text:
        strategies.append(reencoded(original.decode("utf-8")))
    return st.one_of(strategies)


# ---------------------------------------------------------------------------------------
# Tree-level mutations (JSON / YAML documents)

_DEEP = "__sppdet_fuzz_deep__"
#: Values swapped in for any node: other types, extreme numbers, NaN/inf, empties, deep nesting.
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    0.5,
    "",
    "abc",
    "1",
    "NaN",
    "é",
    [],
    {},
    [1, 2, 3],
    [[1, 2, 3, 4]],
    {"a": 1},
    _DEEP,
]


def _paths(obj: Any, prefix: tuple = ()) -> List[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _parent(obj: Any, path: tuple) -> Any:
    for k in path[:-1]:
        obj = obj[k]
    return obj


@st.composite
def mutated_tree(draw, original: Any, max_ops: int = 3) -> Any:
    """A deep copy of a JSON-like document with 1..max_ops nodes dropped, duplicated or swapped."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, max_ops))):
        paths = _paths(doc)[1:]
        # Half the edits land on the top two levels (keys, sections), which a uniform pick over
        # a document of hundreds of leaves would rarely touch.
        if paths and draw(st.booleans()):
            paths = [p for p in paths if len(p) <= 2] or paths
        if not paths:
            return copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent, key = _parent(doc, path), path[-1]
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "swap", "wrap"]))
        if op == "drop":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "duplicate":
            parent[f"{key}_copy"] = copy.deepcopy(parent[key])
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}, str(parent[key])]))
        else:  # a copy: the shared ODD_VALUES must never be edited by a later step
            parent[key] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
    return doc


def dump_json(doc: Any) -> bytes:
    """JSON text of a mutated tree (NaN/Infinity as Python writes them; the deep marker expanded)."""
    text = json.dumps(doc)
    return text.replace(json.dumps(_DEEP), "[" * 5000 + "]" * 5000).encode("utf-8")


def dump_yaml(doc: Any) -> bytes:
    """YAML text of a mutated tree (the deep marker expanded to a deeply nested flow list)."""
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False)
    return text.replace(_DEEP, "[" * 2000 + "]" * 2000).encode("utf-8")  # past the recursion limit
