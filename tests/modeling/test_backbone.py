"""Backbones: shapes, projection geometry (checked numerically), weights, freezing, normalisation."""

from __future__ import annotations

import copy
import logging
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from sppdet.config import ModelConfig
from sppdet.errors import CheckpointError, ConfigError
from sppdet.modeling.backbone import (
    WithinChannelLRN,
    build_backbone,
    feature_geometry,
    load_weights,
    normalize_image,
    resolve_weights,
)

MOBILENET_FILE = ("weights", "mobilenet_v2_imagenet.pth")


def _bb(name="tiny", **kw) -> "torch.nn.Module":
    kw.setdefault("frozen_bn", False)
    return build_backbone(ModelConfig(backbone=name, **kw))


# ---------------------------------------------------------------------------------------
# shapes and geometry


@pytest.mark.parametrize(
    "name,kw,channels,hw",
    [
        ("tiny", {}, 128, (8, 10)),
        ("tiny", {"tiny_width": 8, "reduce_channels": 16}, 16, (8, 10)),
        ("tiny", {"tiny_width": 8, "tiny_stride": 8}, 32, (16, 20)),
        ("tiny", {"tiny_width": 8, "tiny_stride": 8, "tiny_stem_convs": 2}, 32, (16, 20)),
        ("zf5", {}, 256, (9, 11)),  # Caffe ceil-mode pooling: one extra border cell
        ("vgg16", {}, 512, (8, 10)),
        ("resnet18", {}, 256, (8, 10)),
        ("resnet50", {"reduce_channels": 256}, 256, (8, 10)),
        ("mobilenet_v2", {}, 96, (8, 10)),
        ("mobilenet_v2", {"feature_stride": 32}, 1280, (4, 5)),
    ],
)
def test_output_shape_and_stride(name, kw, channels, hw):
    bb = _bb(name, **kw).eval()
    with torch.no_grad():
        y = bb(torch.rand(1, 3, 128, 160))
    assert y.shape == (1, channels, *hw)
    assert bb.out_channels == channels
    assert bb.stride == (32 if kw.get("feature_stride") == 32 else kw.get("tiny_stride", 16))


def test_geometry_hand_computed():
    # 7x7/2 pad 3 is centred (0); a 2x2/2 pool shifts by 0.5 input cells at stride 2 -> 1.0.
    chain = nn.Sequential(nn.Conv2d(3, 4, 7, 2, 3), nn.MaxPool2d(2, 2))
    assert feature_geometry(chain) == (4, 1.5)
    # unpadded 3x3 shifts by one cell; dilation 2 with padding 1 by one more
    assert feature_geometry(nn.Conv2d(3, 3, 3)) == (1, 1.5)
    assert feature_geometry(nn.Conv2d(3, 3, 3, dilation=2, padding=1)) == (1, 1.5)
    assert _bb("vgg16").offset == 8.0  # 0.5 * (1 + 2 + 4 + 8) + 0.5
    assert _bb("zf5").offset == 0.5


def _linearised(bb: nn.Module) -> nn.Module:
    """A copy whose gradient support is the full receptive field: averaging convs (positive
    weights summing to 1), identity batch-norms, max-pools swapped for average pools of the
    same geometry. With small positive inputs every ReLU/ReLU6 passes its gradient."""
    m = copy.deepcopy(bb).eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Conv2d):
            fan = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            nn.init.constant_(mod.weight, 1.0 / fan)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.BatchNorm2d):
            mod.reset_parameters()
            mod.eps = 0.0
        elif isinstance(mod, nn.MaxPool2d):
            parent, _, leaf = name.rpartition(".")
            setattr(
                m.get_submodule(parent) if parent else m,
                leaf,
                nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding, ceil_mode=mod.ceil_mode),
            )
    return m.requires_grad_(False)


@pytest.mark.slow  # 10 s measured (load 13-19 on 2 cores)
@pytest.mark.parametrize(
    "name,kw,width",
    [
        ("tiny", {}, 288),
        ("tiny", {"tiny_stride": 8}, 288),
        ("tiny", {"tiny_stride": 8, "tiny_stem_convs": 2}, 320),
        ("zf5", {}, 224),
        ("vgg16", {}, 256),
        ("resnet18", {}, 288),
        ("mobilenet_v2", {}, 320),
        ("mobilenet_v2", {"feature_stride": 32}, 640),
    ],
)
def test_offset_matches_receptive_field_centre(name, kw, width):
    """Backprop from one output cell; the centre of the input-gradient support along x must be
    ``stride * j + offset`` (continuous pixel coordinates), for two neighbouring cells."""
    bb = _bb(name, **kw)
    net = _linearised(bb)
    x = (torch.rand(1, 3, 16, width) * 1e-3 + 1e-3).requires_grad_(True)
    y = net(x)
    assert float(y.detach().max()) < 6  # no ReLU6 saturation
    for j in (y.shape[3] // 2, y.shape[3] // 2 + 1):
        (g,) = torch.autograd.grad(y[0, :, y.shape[2] // 2, j].sum(), x, retain_graph=True)
        cols = (g.abs().sum(dim=(0, 1, 2)) > 0).nonzero().flatten()
        lo, hi = int(cols.min()), int(cols.max())
        assert 0 < lo and hi < width - 1, "receptive field clipped: widen the test input"
        assert (lo + hi + 1) / 2 == pytest.approx(bb.stride * j + bb.offset, abs=1e-6)


# ---------------------------------------------------------------------------------------
# normalisation


def test_normalize_numbers():
    img = np.array([[[0, 128, 255], [10, 20, 30]]], dtype=np.uint8)  # 1x2 RGB
    r, g, b = 10.0, 20.0, 30.0
    out = normalize_image(img, "imagenet")
    assert out.shape == (3, 1, 2) and out.dtype == torch.float32
    assert out[:, 0, 1].tolist() == pytest.approx(
        [(r / 255 - 0.485) / 0.229, (g / 255 - 0.456) / 0.224, (b / 255 - 0.406) / 0.225], abs=1e-5
    )
    assert normalize_image(img, "minus_one_one")[:, 0, 0].tolist() == pytest.approx(
        [-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6
    )
    assert normalize_image(img, "unit")[:, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0], abs=1e-6)
    caffe = normalize_image(img, "caffe")  # BGR order, mean pixel subtracted, 0..255 scale
    assert caffe[:, 0, 1].tolist() == pytest.approx([b - 102.9801, g - 115.9465, r - 122.7717], abs=1e-4)


def test_normalize_layouts_agree():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ref = normalize_image(img, "caffe")
    t = torch.from_numpy(img)
    assert torch.equal(normalize_image(t, "caffe"), ref)  # HWC tensor
    assert torch.equal(normalize_image(t.permute(2, 0, 1), "caffe"), ref)  # CHW tensor
    assert torch.equal(normalize_image(t.permute(2, 0, 1)[None].float(), "caffe")[0], ref)  # batch, float
    assert torch.equal(normalize_image(img[:, ::-1], "caffe"), ref.flip(-1))  # negative strides
    with pytest.raises(ConfigError, match="model.normalization"):
        normalize_image(img, "bgr")


# ---------------------------------------------------------------------------------------
# freezing


def test_frozen_bn_stays_in_eval_after_train():
    bb = _bb("tiny", frozen_bn=True)
    parent = nn.Sequential(bb)  # the detector calls .train() on its children
    parent.train()
    bns = [m for m in bb.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert bb.stage1[0].weight.requires_grad and bb.training
    before = bns[0].running_mean.clone()
    bb(torch.rand(2, 3, 64, 64) * 5)
    assert torch.equal(bns[0].running_mean, before)


def test_bn_trains_without_frozen_bn():
    bb = _bb("tiny", frozen_bn=False).train()
    assert all(m.training for m in bb.modules() if isinstance(m, nn.BatchNorm2d))


def test_freeze_at_resnet_stages():
    bb = _bb("resnet18", freeze_at=2).train()
    assert not any(p.requires_grad for p in [*bb.conv1.parameters(), *bb.bn1.parameters(), *bb.layer1.parameters()])
    assert all(p.requires_grad for p in [*bb.layer2.parameters(), *bb.layer3.parameters()])
    assert not bb.bn1.training and not bb.layer1[0].bn1.training  # frozen stages keep BN statistics
    assert bb.layer2[0].bn1.training


def test_freeze_at_mobilenet_and_whole():
    bb = _bb("mobilenet_v2", freeze_at=4)
    flags = [any(p.requires_grad for p in bb.features[i].parameters()) for i in range(14)]
    assert flags == [False] * 4 + [True] * 10
    whole = _bb("tiny", freeze_at=-1, reduce_channels=8)
    assert not any(p.requires_grad for p in whole.parameters())
    with pytest.raises(ConfigError, match="model.freeze_at"):
        _bb("zf5", freeze_at=6)


def test_config_errors():
    with pytest.raises(ConfigError, match="model.backbone"):
        _bb("alexnet")
    with pytest.raises(ConfigError, match="model.feature_stride"):
        _bb("resnet18", feature_stride=32)
    with pytest.raises(ConfigError, match="model.tiny_stride"):
        _bb("tiny", tiny_stride=4)
    with pytest.raises(ConfigError, match="model.tiny_stem_convs"):
        _bb("tiny", tiny_stem_convs=-1)


def test_tiny_stem_convs_add_stride4_layers_and_keep_old_keys():
    plain, deeper = _bb("tiny", tiny_width=8), _bb("tiny", tiny_width=8, tiny_stem_convs=2)
    extra = set(deeper.state_dict()) - set(k.replace("stage2.", "stage2.0.", 1) for k in plain.state_dict())
    assert sorted({k.split(".")[1] for k in extra}) == ["1", "2"]  # two more conv+BN blocks
    assert all(k.startswith("stage2.") for k in extra)
    convs = [m for m in deeper.stage2.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (8, 8, (2, 2)),
        (8, 8, (1, 1)),
        (8, 8, (1, 1)),
    ]
    assert "stage2.0.weight" in plain.state_dict()  # without extra convs: the keys of earlier checkpoints


def test_within_channel_lrn_formula():
    x = torch.rand(1, 2, 4, 5) * 100
    lrn = WithinChannelLRN(3, alpha=1e-3, beta=0.75)
    pad = nn.functional.pad(x * x, (1, 1, 1, 1))
    i, j = 2, 3  # interior: mean over the 3x3 window of the same channel
    mean = pad[0, 1, i : i + 3, j : j + 3].mean()
    assert lrn(x)[0, 1, i, j] == pytest.approx(float(x[0, 1, i, j] / (1 + 1e-3 * mean) ** 0.75), rel=1e-5)


# ---------------------------------------------------------------------------------------
# weights


def test_random_frozen_bn_warning_only_without_trained_weights(caplog):
    cfg = ModelConfig(backbone="resnet18", weights="", frozen_bn=True)
    with caplog.at_level(logging.WARNING, logger="sppdet.backbone"):
        build_backbone(cfg)
    assert any("frozen_bn is true with random weights" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sppdet.backbone"):
        build_backbone(cfg, weights_follow=True)  # a checkpoint's weights come next
    assert not caplog.records


def test_real_mobilenet_weights_load(caplog, shared_data):
    path = shared_data(*MOBILENET_FILE)
    with caplog.at_level(logging.WARNING, logger="sppdet.backbone"):
        bb = build_backbone(
            ModelConfig(backbone="mobilenet_v2", weights=str(path), frozen_bn=True, normalization="minus_one_one")
        )
    assert not caplog.records  # classifier and blocks 14-18 are dropped silently
    state = torch.load(path, weights_only=True)
    own = bb.state_dict()
    assert set(own) == {k for k in state if k.startswith(tuple(f"features.{i}." for i in range(14)))}
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert bb.normalization == "minus_one_one"
    bb.train()
    assert not any(m.training for m in bb.modules() if isinstance(m, nn.BatchNorm2d))


def test_real_mobilenet_classifies_plausibly(shared_data):
    """Sanity of the shared weights + minus_one_one: a VOC photo of a TV on a desk."""
    path = shared_data(*MOBILENET_FILE)
    image = shared_data("voc07-demo", "001551.jpg")
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(path, weights_only=True))
    from PIL import Image

    rgb = np.asarray(Image.open(image).convert("RGB"))
    x = normalize_image(rgb, "minus_one_one")[None]
    x = nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top5 = net.eval()(x).topk(5).indices[0].tolist()
    names = {torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"][i] for i in top5}
    assert names & {"television", "monitor", "screen", "desktop computer", "desk", "home theater"}


@pytest.fixture
def no_download(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fail)


def test_enum_names_resolve_without_download(no_download):
    from torchvision.models import ResNet50_Weights, VGG16_Weights

    assert resolve_weights("resnet50", "IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    assert resolve_weights("resnet50", "DEFAULT") is ResNet50_Weights.IMAGENET1K_V2
    assert resolve_weights("vgg16", "VGG16_Weights.IMAGENET1K_FEATURES") is VGG16_Weights.IMAGENET1K_FEATURES
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET1K_V9")
    with pytest.raises(ConfigError, match="not resnet18 weights"):
        resolve_weights("resnet18", "VGG16_Weights.IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="zf5"):
        resolve_weights("zf5", "IMAGENET1K_V1")


def test_enum_weights_map_onto_truncated_backbone(monkeypatch, caplog):
    full = torchvision.models.resnet18().state_dict()  # what torchvision would download
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, **k: full)
    with caplog.at_level(logging.WARNING, logger="sppdet.backbone"):
        bb = _bb("resnet18", weights="IMAGENET1K_V1", normalization="imagenet")
    assert not caplog.records
    assert torch.equal(bb.layer3[1].conv2.weight, full["layer3.1.conv2.weight"])
    # a mismatched normalisation is worth a warning
    with caplog.at_level(logging.WARNING, logger="sppdet.backbone"):
        _bb("resnet18", weights="IMAGENET1K_V1", normalization="caffe")
    assert "expects" in caplog.text


def test_download_failure_is_one_line(monkeypatch):
    def offline(self, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as e:
        _bb("mobilenet_v2", weights="DEFAULT")
    assert "local" in str(e.value) and "\n" not in str(e.value)


def test_bad_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        _bb("zf5", weights=str(tmp_path / "zf5.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        _bb("zf5", weights=str(corrupt))
    assert str(corrupt) in str(e.value) and "\n" not in str(e.value)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        _bb("zf5", weights=str(listing))


def test_missing_unexpected_and_misshaped_keys(tmp_path, caplog):
    src = _bb("zf5").state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in src.items() if not k.startswith("conv5")}, partial)
    with pytest.raises(CheckpointError, match="conv5.weight"):
        _bb("zf5", weights=str(partial))
    extra = tmp_path / "extra.pth"
    torch.save({**src, "fc6.weight": torch.zeros(2, 2), "classifier.1.weight": torch.zeros(2)}, extra)
    with caplog.at_level(logging.WARNING, logger="sppdet.backbone"):
        bb = _bb("zf5", weights=str(extra), reduce_channels=32)  # reduce.* is new: not missing
    assert "fc6.weight" in caplog.text and "classifier" not in caplog.text
    assert torch.equal(bb.conv5.weight, src["conv5.weight"])
    shaped = tmp_path / "shaped.pth"
    torch.save({**src, "conv1.weight": torch.zeros(96, 3, 5, 5)}, shaped)
    with pytest.raises(CheckpointError, match="conv1.weight"):
        _bb("zf5", weights=str(shaped))


def test_detector_checkpoint_backbone_is_unwrapped(tmp_path):
    src = _bb("tiny", tiny_width=8)
    ckpt = tmp_path / "model_final.pth"
    state = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model": {**state, "head.fc6.weight": torch.zeros(3, 3)}, "iteration": 5}, ckpt)
    bb = _bb("tiny", tiny_width=8)
    load_weights(bb, str(ckpt))
    assert torch.equal(bb.stage4[1][0].weight, src.stage4[1][0].weight)
