"""Each model source runs a recipe end to end: build, train one epoch, measure, later stages, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from small_runs import run_small
from tiny_data import image_folder, npz_file, text_file, tokenizer_folder
from tiny_models import hf_folder, onnx_convnet
from vision import needs_vision


@needs_vision
def test_an_onnx_model_pytorch_did_not_write_is_trained_pruned_quantized_and_exported(tmp_path):
    images = image_folder(tmp_path / "images", classes=3, per_class=6)
    report = run_small(
        {"name": "image_folder", "path": str(images), "transforms": {"resize": 8, "crop": 8, "channels": 1}},
        {"onnx": str(onnx_convnet(tmp_path / "convnet.onnx", channels=1, size=8, classes=3))},
        tmp_path / "run",
        stages=[{"prune": {"method": "magnitude", "sparsity": 0.5}}, {"quantize": {"scheme": "int8_dynamic"}}],
        export=["onnx"],
    )
    train, prune, quantize = report["stages"]
    assert (train["stage"], prune["stage"], quantize["stage"]) == ("train", "prune", "quantize")
    assert prune["nonzero_params"] < 0.6 * train["nonzero_params"]
    assert (tmp_path / "run" / "export" / "model.onnx").is_file()


def test_an_exported_program_trains_on_npz_data(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    program = torch.export.export(module, (torch.randn(2, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "model.pt2")
    before = module[0].weight.detach().clone()
    report = run_small(
        {"name": "npz", "path": str(npz_file(tmp_path / "a.npz", count=60))},
        {"exported": str(tmp_path / "model.pt2")},
        tmp_path / "run",
    )
    (train,) = report["stages"]
    assert train["params"] == sum(parameter.numel() for parameter in module.parameters())
    trained = torch.load(tmp_path / "run" / train["artifact"], weights_only=True)
    weights = next(value for name, value in trained.items() if value.shape == before.shape)
    assert not torch.equal(weights, before)  # one epoch changed the program's weights


def test_a_hugging_face_classifier_trains_on_a_text_file(tmp_path):
    report = run_small(
        {
            "name": "text_file",
            "path": str(text_file(tmp_path / "t.txt")),
            "tokenizer": str(tokenizer_folder(tmp_path / "tokenizer")),
        },
        {"huggingface": str(hf_folder(tmp_path / "bert", "bert")), "task": "sequence_classification"},
        tmp_path / "run",
    )
    (train,) = report["stages"]
    assert train["metric"] == "accuracy" and 0.0 <= train["value"] <= 1.0
    assert train["latency_ms"]["p50"] > 0


@pytest.mark.slow  # about 10 s on two cores; building and loading torchvision models is tested in the fast suite
@needs_vision
def test_a_torchvision_model_trains_on_an_image_folder(tmp_path):
    # 12 training images: batches of 8 and 4 (a last batch of one fails BatchNorm in training mode)
    images = image_folder(tmp_path / "images", classes=2, per_class=8)
    report = run_small(
        {
            "name": "image_folder",
            "path": str(images),
            "transforms": {"resize": 32, "crop": 32, "augment": True, "normalize": "imagenet"},
        },
        {"torchvision": "shufflenet_v2_x0_5"},
        tmp_path / "run",
    )
    (train,) = report["stages"]
    assert train["params"] > 300_000  # the whole ShuffleNetV2, with its 2-class head
    assert np.isfinite(train["value"])


@needs_vision
@pytest.mark.slow
def test_a_timm_model_trains_on_an_image_folder(tmp_path):
    images = image_folder(tmp_path / "images", classes=2, per_class=8)
    report = run_small(
        {"name": "image_folder", "path": str(images), "transforms": {"resize": 32, "crop": 32}},
        {"timm": "convnext_atto"},
        tmp_path / "run",
    )
    (train,) = report["stages"]
    assert train["params"] > 3_000_000


KERAS = Path(__file__).parent / "keras"  # a Keras CNN through tf2onnx (keras/make_keras_onnx.py wrote them)


def test_a_keras_model_through_tf2onnx_gives_keras_outputs_and_is_pruned_quantized_and_exported(tmp_path):
    import optiforge

    pixels = np.load(KERAS / "keras_input.npy")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pixels.npz", x=rng.normal(size=(60, 8, 8, 1)).astype("float32"), y=np.arange(60) % 10)
    data = optiforge.build_data(optiforge.DataConfig(name="npz", path=str(tmp_path / "pixels.npz")))
    model = optiforge.build_model(optiforge.ModelConfig(onnx=str(KERAS / "keras_cnn.onnx")), data).eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(outputs, np.load(KERAS / "keras_output.npy"), rtol=1e-4, atol=1e-5)

    report = run_small(
        {"name": "npz", "path": str(tmp_path / "pixels.npz")},
        {"onnx": str(KERAS / "keras_cnn.onnx")},
        tmp_path / "run",
        stages=[{"prune": {"method": "magnitude", "sparsity": 0.5}}, {"quantize": {"scheme": "int8_dynamic"}}],
        export=["onnx"],
    )
    train, prune, quantize = report["stages"]
    assert prune["nonzero_params"] < 0.6 * train["nonzero_params"]
    assert quantize["stage"] == "quantize" and (tmp_path / "run" / "export" / "model.onnx").is_file()
