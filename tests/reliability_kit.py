"""Helpers shared by the reliability tests (bad input, crash safety, security, detect).

Not a test module: it builds a tiny sample set, writes tiny configs and runs the tools the way a
user would, either in this process (``run_tool`` on the tool's ``main``, fast) or as a real
subprocess (slow: each one imports torch).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = REPO_ROOT / "tools"


def make_sample(root: Path, num_train: int = 6, num_test: int = 3) -> Path:
    """The generated sample set under ``root``; returns its VOC folder."""
    from sppdet.data.synthetic import generate_sample_dataset

    generate_sample_dataset(str(root), num_train=num_train, num_test=num_test)
    return root / "voc"


def tiny_config(voc_root: Path, out: Path, **extra) -> Dict:
    """A config dict that trains the tiny backbone in a few seconds on CPU (``extra``: "a.b" -> value)."""
    from sppdet.data.synthetic import SAMPLE_CLASSES

    cfg = {
        "device": "cpu",
        "output_dir": str(out),
        "data": {
            "format": "voc",
            "root": str(voc_root),
            "train_split": "train",
            "test_split": "test",
            "classes": list(SAMPLE_CLASSES),
        },
        "proposals": {"method": "edgeboxes", "max_per_image": 100, "workers": 0},
        "model": {
            "backbone": "tiny",
            "tiny_width": 8,
            "fc_dims": [32, 32],
            "spp_levels": [2, 1],
            "dropout": 0.0,
            "frozen_bn": False,
        },
        "input": {"train_scales": [128], "test_scales": [128], "max_size": 256},
        "train": {
            "max_iter": 4,
            "warmup_iters": 1,
            "lr_steps": [3],
            "checkpoint_period": 2,
            "log_period": 2,
            "workers": 0,
            "rois_per_image": 16,
            "flip": False,
        },
        "test": {"score_thresh": 0.0},
    }
    for key, value in extra.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def write_config(path: Path, cfg: Dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def tool_main(name: str) -> Callable:
    """``main`` of ``tools/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"sppdet_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_in_process(name: str, argv: Sequence[str], capsys) -> Tuple[int, str, str]:
    """Run a tool as ``python tools/<name>.py argv`` would, in this process: (exit code, out, err)."""
    from sppdet.cli import run_tool

    capsys.readouterr()
    code = run_tool(tool_main(name), [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def child_env() -> Dict[str, str]:
    """Environment of tool subprocesses: one thread (fast and bitwise deterministic), repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("SPPDET_DEBUG", None)
    return env


def run_subprocess(
    name: str, argv: Sequence[str], cwd: Optional[Path] = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS / f"{name}.py"), *[str(a) for a in argv]],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        timeout=timeout,
    )


def kill_when(name: str, argv: Sequence[str], ready: Callable[[], bool], log: Path, timeout: float = 240) -> int:
    """Start ``tools/<name>.py``, SIGKILL it as soon as ``ready()`` is true; returns its exit code.

    The exit code is ``-9`` when the kill happened and the tool's own code when it ended first.
    """
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, str(TOOLS / f"{name}.py"), *[str(a) for a in argv]],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
        t0 = time.time()
        try:
            while proc.poll() is None:
                if ready():
                    proc.kill()  # SIGKILL: no clean-up handler runs
                    break
                if time.time() - t0 > timeout:
                    proc.kill()
                    raise TimeoutError(f"{name} did not reach the kill point in {timeout} s; log: {log}")
                time.sleep(0.005)
        finally:
            proc.wait()
    return proc.returncode


def assert_user_error(code: int, err: str, *needles: str, exit_code: int = 2) -> str:
    """A tool failed cleanly: the exit code, an ``error:`` line holding every needle, no traceback."""
    assert code == exit_code, f"exit code {code}, expected {exit_code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines, f"no 'error: ...' line in stderr:\n{err}"
    hits = [line for line in lines if all(n in line for n in needles)]
    assert hits, f"no error line contains {needles}:\n" + "\n".join(lines)
    return hits[0]


def assert_clean_success(code: int, err: str) -> None:
    assert code == 0, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err and not any(line.startswith("error: ") for line in err.splitlines()), err


def clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG that claims ``width x height`` (no pixel data: cheap to write)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG whose start-of-frame claims ``width x height`` (and no image data)."""
    import struct

    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0, 0, 63, 0)
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + sof + sos + b"\x00" * 64 + b"\xff\xd9"
