"""Untrusted files: no code runs from a checkpoint or a pickle unless asked, XML entities are never
expanded, and output paths made from image names cannot leave the output folder.
"""

import ast
import json
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from reliability_kit import REPO_ROOT, assert_user_error, make_sample, run_in_process, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from sppdet.config import config_from_dict
    from sppdet.engine.train import train

    base = tmp_path_factory.mktemp("security")
    voc = make_sample(base / "sample", num_train=4, num_test=1)
    train(config_from_dict(tiny_config(voc, base / "model", **{"train.max_iter": 2})), str(base / "model"))
    return base / "model" / "model_final.pth", voc


class _Touch:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ---------------------------------------------------------------------------------------
# pickles and checkpoints


def test_checkpoint_with_code_is_refused_and_nothing_runs(model, tmp_path, capsys):
    weights, voc = model
    marker = tmp_path / "pwned"
    state = torch.load(weights, weights_only=True)
    state["extras"] = {"payload": _Touch(marker)}
    evil = tmp_path / "evil.pth"
    torch.save(state, evil)
    code, _, err = run_in_process(
        "detect",
        ["--weights", evil, "--input", voc / "JPEGImages" / "000001.jpg", "--output", tmp_path / "out"],
        capsys,
    )
    assert_user_error(code, err, str(evil), "refusing to load", "could run code")
    assert not marker.exists()


def test_pickled_proposals_need_allow_pickle(model, tmp_path, capsys):
    weights, voc = model
    image = voc / "JPEGImages" / "000001.jpg"
    benign = tmp_path / "props.pkl"
    benign.write_bytes(pickle.dumps({"ids": ["000001"], "boxes": [np.array([[10, 10, 90, 80]], np.float32)]}))
    code, _, err = run_in_process(
        "detect", ["--weights", weights, "--input", image, "--output", tmp_path / "o1", "--proposals", benign], capsys
    )
    assert_user_error(code, err, str(benign), "--allow-pickle")
    code, _, err = run_in_process(
        "detect",
        ["--weights", weights, "--input", image, "--output", tmp_path / "o2", "--proposals", benign, "--allow-pickle"],
        capsys,
    )
    assert code == 0, err

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ids": ["000001"], "boxes": [_Touch(marker)]}))
    for extra in ([], ["--allow-pickle"]):  # even when allowed, only numpy and plain containers load
        code, _, err = run_in_process("proposals", ["convert", evil, "--out", tmp_path / "p.npz", *extra], capsys)
        assert_user_error(code, err, str(evil))
        assert not marker.exists()


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


@pytest.mark.slow  # 13 s measured (load 13-19 on 2 cores)
def test_source_audit_no_unsafe_loading():
    """Every ``torch.load`` passes ``weights_only=True``; no ``pickle.load(s)``, ``yaml.load``, ``eval``,
    ``exec`` or ``np.load(allow_pickle=True)`` anywhere in the package or the tools."""
    files = sorted((REPO_ROOT / "sppdet").rglob("*.py")) + sorted((REPO_ROOT / "tools").glob("*.py"))
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "torch.load"):
            kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if kw.get("weights_only") != "True":
                problems.append(f"{path}:{call.lineno}: torch.load without weights_only=True")
        for name in ("pickle.load", "pickle.loads", "yaml.load", "eval", "exec", "yaml.unsafe_load"):
            problems += [f"{path}:{c.lineno}: {name}" for c in _calls(tree, name)]
        for call in _calls(tree, "np.load"):
            if any(k.arg == "allow_pickle" and ast.unparse(k.value) != "False" for k in call.keywords):
                problems.append(f"{path}:{call.lineno}: np.load with allow_pickle")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------
# XML


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
    + "]>\n<annotation><filename>&lol9;</filename><object><name>&lol9;</name></object></annotation>\n"
)
XXE = (
    '<?xml version="1.0"?>\n<!DOCTYPE a [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>\n'
    "<annotation><filename>&xxe;</filename></annotation>\n"
)


def _utf16_no_bom(text):
    return text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode("utf-16-le")


@pytest.mark.parametrize(
    "data",
    [BILLION_LAUGHS.encode(), XXE.encode(), BILLION_LAUGHS.encode("utf-16"), _utf16_no_bom(BILLION_LAUGHS)],
    ids=["billion-laughs", "external-entity", "utf16-bom", "utf16-no-bom"],
)
def test_xml_entities_refused_quickly(model, tmp_path, capsys, data):
    import shutil

    from reliability_kit import write_config

    _, voc = model
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    (root / "Annotations" / "000001.xml").write_bytes(data)
    cfg = write_config(tmp_path / "cfg.yaml", tiny_config(root, tmp_path / "out"))
    t0 = time.time()
    code, _, err = run_in_process("train", ["--config", cfg], capsys)
    assert time.time() - t0 < 20
    assert_user_error(code, err, "000001.xml", "DOCTYPE or ENTITY declaration is refused")


# ---------------------------------------------------------------------------------------
# output paths from image names


def test_output_names_stay_inside_and_unique():
    from sppdet.engine.detect import MAX_NAME, output_names

    files = [
        Path("a/..evil.jpg"),
        Path("../../etc/passwd.png"),
        Path("x/../../y/....jpg"),
        Path("a b$c.jpg"),
        Path("a.jpg"),
        Path("a.png"),
        Path("A.jpg"),
        Path("a_1.jpg"),
        Path("dir/a.jpg"),
        Path("ü.jpg"),
        Path("." * 5 + ".jpg"),
        Path("x" * 400 + ".jpg"),
        Path("x" * 400 + "y.jpg"),
        Path("-rf.jpg"),
    ]
    names = output_names(files)
    assert len({n.lower() for n in names}) == len(names)
    for n in names:
        assert n and "/" not in n and "\\" not in n and not n.startswith(".") and len(n) <= MAX_NAME + 9
        assert (Path("/out") / f"{n}.jpg").resolve().parent == Path("/out")
    assert names[:2] == ["evil", "passwd"]


def test_detect_outputs_stay_in_the_output_folder(model, tmp_path, capsys):
    weights, voc = model
    src = voc / "JPEGImages" / "000001.jpg"
    inputs = tmp_path / "in" / "sub"
    inputs.mkdir(parents=True)
    for name in ("..evil.jpg", "...jpg", "a.jpg", "a_1.jpg", "A.JPG"):
        (inputs / name).write_bytes(src.read_bytes())
    (inputs.parent / "a.png").write_bytes(cv2.imencode(".png", cv2.imread(str(src)))[1].tobytes())
    outside = tmp_path / "victim.txt"
    outside.write_text("precious")
    (inputs / "link.jpg").symlink_to(src)  # a symlinked input: read, written under its own name
    out = tmp_path / "out"
    out.mkdir()
    (out / "evil.jpg").symlink_to(outside)  # a planted symlink where an output goes: replaced, not followed
    (out / "detections.json").symlink_to(outside)
    before = {p for p in tmp_path.rglob("*")}
    code, _, err = run_in_process(
        "detect",
        ["--weights", weights, "--input", inputs, f"{inputs}/../a.png", "--output", out, "--coco-json", "--voc-comp4"],
        capsys,
    )
    assert code == 0, err
    assert outside.read_text() == "precious"
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(out in p.parents for p in new), sorted(map(str, new))
    assert not (out / "evil.jpg").is_symlink() and not (out / "detections.json").is_symlink()
    ids = [e["image_id"] for e in json.loads((out / "detections.json").read_text())["images"]]
    assert len(ids) == len(set(i.lower() for i in ids)) == 7
    assert {f"{i}.jpg" for i in ids} <= {p.name for p in out.glob("*.jpg")}
