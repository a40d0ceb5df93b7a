"""The default spaces of ``optiforge optimize``: what each objective, family and machine searches, and that
a compressed candidate's size is its packed file."""

from __future__ import annotations

import json

import pytest
import torch

import optiforge
from optiforge.encoders.optimize import EncoderRuntimeConfig
from optiforge.search import defaults
from optiforge.search.defaults import default_space
from optiforge.stages.search import candidates_of, default_search


def _names(family: str, objective: str, cuda: bool = False) -> list[str]:
    specs, _ = candidates_of(default_search(family, objective) if not cuda else _search(family, objective, cuda))
    return [spec.name for spec in specs]


def _search(family: str, objective: str, cuda: bool):
    from optiforge.stages.search import SearchStageConfig

    return SearchStageConfig(**default_space(family, objective, cuda=cuda), objective=objective)


def _steps(family: str, objective: str, cuda: bool = False) -> list[list[tuple[str, dict]]]:
    specs, _ = candidates_of(_search(family, objective, cuda))
    return [[(step.kind, step.fields) for step in spec.steps] for spec in specs]


def test_size_space_holds_the_deep_compression_path_at_high_sparsity():
    deep = [
        (steps[0][1]["sparsity"], steps[1][1]["clusters"], steps[0][1]["finetune"]["epochs"])
        for steps in _steps("classifier", "size")
        if len(steps) == 2
        and steps[0][0] == "prune"
        and steps[0][1]["method"] == "magnitude"
        and steps[0][1]["schedule"] is not None
        and steps[1][0] == "share"
    ]
    assert {(sparsity, clusters) for sparsity, clusters, _ in deep} >= {(0.9, 16), (0.95, 16), (0.95, 8)}
    # the compress recipe prunes to 94% over 20 epochs: the space prunes at least as long
    assert min(epochs for _, _, epochs in deep) >= 20


def test_size_space_leaves_out_int8_after_sharing_and_speed_spaces_leave_out_sharing():
    size = _steps("classifier", "size")
    # a dense int8 file after sharing would undo the packed file's savings
    assert not any({"share", "quantize"} <= {kind for kind, _ in steps} for steps in size)
    for objective in ("latency", "throughput", "memory"):
        assert not any(kind == "share" for steps in _steps("classifier", objective) for kind, _ in steps)


def test_speed_space_prunes_channels_deeper_and_repairs_with_fine_tuning():
    pruned = {
        steps[0][1]["sparsity"]: steps[0][1]["finetune"]["epochs"]
        for steps in _steps("classifier", "latency")
        if steps and steps[0][0] == "prune"
    }
    assert set(pruned) == {0.3, 0.5, 0.7}
    assert all(epochs >= 2 for epochs in pruned.values()) and pruned[0.7] > pruned[0.5]


def _int8_static_engines(objective: str, cuda: bool = False) -> set[str]:
    return {
        fields["engine"]
        for steps in _steps("classifier", objective, cuda)
        for kind, fields in steps
        if kind == "quantize" and fields["scheme"] == "int8_static"
    }


def test_speed_space_has_static_int8_on_every_installed_engine(monkeypatch):
    monkeypatch.setattr(defaults, "_installed", lambda package: True)
    assert _int8_static_engines("latency") == {"torch", "onnxruntime", "openvino"}
    monkeypatch.setattr(defaults, "_installed", lambda package: package not in ("openvino", "nncf"))
    assert _int8_static_engines("throughput") == {"torch", "onnxruntime"}


def test_memory_space_keeps_to_runtimes_whose_memory_pytorch_sees(monkeypatch):
    monkeypatch.setattr(defaults, "_installed", lambda package: True)
    assert _int8_static_engines("memory") == {"torch"}
    assert default_space("encoder", "memory") == {}


def test_precisions_follow_the_device(monkeypatch):
    monkeypatch.setattr(defaults, "cpu_has_bf16", lambda: False)
    cpu = defaults.quantize_variants("latency", cuda=False)
    assert not any(isinstance(v, dict) and v["scheme"] in ("bf16", "fp16") for v in cpu)
    monkeypatch.setattr(defaults, "cpu_has_bf16", lambda: True)
    assert {"scheme": "bf16", "engine": "torch"} in defaults.quantize_variants("latency", cuda=False)
    gpu = defaults.quantize_variants("latency", cuda=True)
    assert {"scheme": "fp16", "engine": "torch"} in gpu
    assert not any(isinstance(v, dict) and v["engine"] in ("torch", "openvino") and "int8" in v["scheme"] for v in gpu)


def test_encoder_space_has_a_padding_free_openvino_int8_runtime(monkeypatch):
    monkeypatch.setattr(defaults, "_installed", lambda package: True)
    runtimes = default_space("encoder", "latency")["options"]["encoder_runtime"]
    assert {"engine": "openvino", "quantize": "int8_static", "remove_padding": True} in runtimes
    monkeypatch.setattr(defaults, "_installed", lambda package: package != "nncf")
    runtimes = default_space("encoder", "latency")["options"]["encoder_runtime"]
    assert not any(runtime.get("engine") == "openvino" for runtime in runtimes)


@pytest.mark.parametrize("units", [True, False])
def test_encoder_space_has_bf16_openvino_runtimes_only_on_a_cpu_with_bf16_units(monkeypatch, units):
    monkeypatch.setattr(defaults, "_installed", lambda package: True)
    monkeypatch.setattr(defaults, "cpu_has_bf16", lambda: units)
    runtimes = default_space("encoder", "throughput")["options"]["encoder_runtime"]
    bf16 = [runtime for runtime in runtimes if runtime.get("session", {}).get("precision") == "bf16"]
    expected = [
        {"engine": "openvino", "quantize": quantize, "remove_padding": True, "session": {"precision": "bf16"}}
        for quantize in ("none", "int8_static")
    ]
    assert bf16 == (expected if units else [])
    for runtime in runtimes:  # every runtime of the space is a valid stage config
        EncoderRuntimeConfig(**runtime)


def test_a_compressed_candidate_is_measured_as_its_packed_file(digits, tmp_path, one_thread):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[64]), digits)
    model = optiforge.train(model, digits, optiforge.TrainConfig(epochs=2, batch_size=64), progress=False).model
    search = {
        "candidates": [[{"prune": {"method": "magnitude", "sparsity": 0.9}}, {"share": {"clusters": 8}}]],
        "objective": "size",
        "constraint": {"max_metric_drop": None},
        "timing": {
            "rounds": 1,
            "measure": {"latency_repeats": 1, "warmup": 0, "throughput_batch": 8, "throughput_repeats": 1},
        },
    }
    result = optiforge.optimize(model, digits, search=search, out=tmp_path, progress=False)
    rows = json.loads((tmp_path / "search" / "search.json").read_text())["candidates"]
    (row,) = rows
    packed = tmp_path / "search" / row["artifact"]
    assert packed.suffix == ".ofpk" and row["size_bytes"] == packed.stat().st_size
    # 90% zeros and 8 shared values: far below the float32 state dict the baseline is measured as
    assert row["size_bytes"] * 8 < result.search.baseline["size_bytes"]


@pytest.mark.parametrize("objective", ["latency", "size"])
def test_default_spaces_stay_bounded(objective):
    assert len(_names("classifier", objective)) <= 30


def test_a_pretrained_network_gets_post_training_forms_only(monkeypatch):
    monkeypatch.setattr(defaults, "_installed", lambda package: True)
    monkeypatch.setattr(defaults, "cpu_has_bf16", lambda: True)
    for objective in ("latency", "throughput", "size", "memory"):
        names = _names("pretrained", objective)
        assert not any(name.startswith(("prune", "factorize", "share")) for name in names), objective
        assert "epochs" not in " ".join(names)  # nothing fine-tunes
    speed = _names("pretrained", "throughput")
    kept = [name for name in speed if "float_most_sensitive" in name]
    assert len(kept) == len(defaults.KEPT_FLOAT) and all("engine=openvino" in name for name in kept)
    assert "quantize(scheme=bf16, engine=openvino)" in speed
    size = _names("pretrained", "size")
    assert "quantize(scheme=int4_weight_only, engine=openvino)" in size and "unchanged" in size
    assert not any("openvino" in name or "onnxruntime" in name for name in _names("pretrained", "memory"))
    monkeypatch.setattr(defaults, "_installed", lambda package: package not in ("openvino", "nncf"))
    assert not any("openvino" in name for name in _names("pretrained", "throughput"))


def test_optimize_names_the_family_of_a_network_judged_by_fidelity_to_itself(capsys):
    from optiforge.cli import main

    assert main(["optimize", "efficientnet", "--dry-run", "--objective", "throughput", "--batch", "32"]) == 0
    printed = capsys.readouterr().out
    assert "objective throughput at batch 32, pretrained" in printed and "prune(" not in printed
