"""EfficientNet-Lite0: offline ImageNet weights, sensible classes on real photographs, the export contract."""

from __future__ import annotations

import sys

import pytest
import torch

from optiforge.errors import DependencyError, ModelError

# ImageNet-1k indices: the classes a person would accept for each photograph
PLAUSIBLE = {
    "chelsea": {281, 282, 283, 285, 287},  # tabby, tiger cat, Persian cat, Egyptian cat, lynx
    "coffee": {504, 967, 968},  # coffee mug, espresso, cup
    "flower": {985},  # daisy
    "grace_hopper": {652, 457},  # military uniform, bow tie
}


def _centre_view(photo: torch.Tensor) -> torch.Tensor:
    from optiforge.data.photos import VIEW_SIZE
    from optiforge.models.efficientnet import normalize

    _, height, width = photo.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = photo[:, top : top + side, left : left + side][None]
    resized = torch.nn.functional.interpolate(square, size=(VIEW_SIZE, VIEW_SIZE), mode="bilinear", antialias=True)
    return normalize(resized[0])


def test_pretrained_model_names_plausible_classes_for_real_photographs(efficientnet):
    from optiforge.data.photos import available_photos

    photos = {name: photo for name, photo in available_photos().items() if name in PLAUSIBLE}
    assert {"flower", "grace_hopper"} <= set(photos)
    with torch.no_grad():
        logits = efficientnet(torch.stack([_centre_view(photo) for photo in photos.values()]))
    assert logits.shape == (len(photos), 1000)
    for name, row in zip(photos, logits, strict=True):
        top5 = set(row.topk(5).indices.tolist())
        assert top5 & PLAUSIBLE[name], f"{name}: top-5 {sorted(top5)}"
        assert int(row.argmax()) in PLAUSIBLE[name], f"{name}: top-1 {int(row.argmax())}"


def test_standard_convolutions_compute_what_the_package_network_computes(efficientnet):
    from efficientnet_lite_pytorch import EfficientNet

    from optiforge.models.efficientnet import weights_path

    original = EfficientNet.from_name("efficientnet-lite0")
    original.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    inputs = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = original.eval()(inputs), efficientnet(inputs)
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0)
    assert not any(hasattr(module, "static_padding") for module in efficientnet.modules())


def test_missing_model_package_names_the_vision_extra(monkeypatch):
    from optiforge.models.efficientnet import load_efficientnet_lite0

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(DependencyError, match=r"efficientnet_lite_pytorch.*optiforge\[vision\]"):
        load_efficientnet_lite0()


def test_builder_refuses_inputs_that_are_not_224_pixel_rgb():
    from optiforge.models import MODELS

    with pytest.raises(ModelError, match=r"\(3, 224, 224\).*\(1, 40\).*photos"):
        MODELS.get("efficientnet_lite0")((1, 40), 1000)


def test_unreadable_weights_file_is_refused_with_its_path(tmp_path):
    from optiforge.models.efficientnet import load_efficientnet_lite0

    path = tmp_path / "weights.pt"
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(ModelError, match="weights.pt"):
        load_efficientnet_lite0(path)


def test_onnx_export_takes_pixel_values_and_gives_logits_in_onnx_runtime(efficientnet, tmp_path):
    import onnxruntime

    from optiforge.exporters.onnx import export_onnx_format

    path = export_onnx_format(efficientnet, tmp_path / "model.onnx", torch.zeros(1, 3, 224, 224))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [item.name for item in session.get_inputs()] == ["pixel_values"]
    assert [item.name for item in session.get_outputs()] == ["logits"]
    inputs = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    (logits,) = session.run(["logits"], {"pixel_values": inputs.numpy()})
    assert logits.shape == (3, 1000)
    with torch.no_grad():
        expected = efficientnet(inputs)
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-3, rtol=0)
