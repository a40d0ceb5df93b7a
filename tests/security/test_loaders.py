"""No file optiforge loads can run code, and a checkpoint that does not fit is one clear error.

Each malicious file carries a payload that would create a marker folder (``os.mkdir``);
every loader must refuse it with an OptiforgeError, and the marker must not exist.
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
import torch
import zstandard
from torch import nn

import optiforge
from optiforge import ModelConfig, TrainConfig
from optiforge.compress import PackedFileError, load_packed, write_packed
from optiforge.distillation.teachers import check_teacher, resolve_teacher
from optiforge.errors import ModelError, TrainingError
from optiforge.quantization import load_quantized_state
from optiforge.quantization.artifact import FORMAT
from optiforge.training.checkpoint import load_checkpoint

SMALL = {"name": "mlp", "hidden": [8]}
ONE_EPOCH = TrainConfig(epochs=1, batch_size=256)


class Payload:
    """Pickles as a call to ``os.mkdir(marker)``: what a hostile file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _dotted_gadget(module: str, name: str, argument: str) -> bytes:
    """A protocol-4 pickle calling ``module`` + dotted ``name`` (e.g. optiforge.cli + os.mkdir) with one argument."""
    return b"\x80\x04" + _unicode(module) + _unicode(name) + b"\x93" + _unicode(argument) + b"\x85R."


def _forge_packed(valid, architecture: bytes, path):
    """A packed file with its architecture section replaced and the (unkeyed) checksum recomputed."""
    content = valid.read_bytes()
    body = content[16:]
    (count,) = struct.unpack("<I", body[:4])
    lengths = struct.unpack(f"<{count}I", body[4 : 4 + 4 * count])
    offset, frames = 4 + 4 * count, []
    for length in lengths:
        frames.append(body[offset : offset + length])
        offset += length
    frames[1] = zstandard.ZstdCompressor().compress(architecture)
    body = struct.pack(f"<I{len(frames)}I", len(frames), *map(len, frames)) + b"".join(frames)
    path.write_bytes(content[:8] + hashlib.blake2b(body, digest_size=8).digest() + body)
    return path


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "code-ran"


@pytest.fixture
def hostile_pickle(tmp_path, marker):
    path = tmp_path / "hostile.pt"
    torch.save({"model": {"0.weight": Payload(marker)}}, path)
    return path


@pytest.fixture
def packed(tmp_path):
    torch.manual_seed(0)
    return write_packed(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), tmp_path / "valid.ofpk")


def test_the_payloads_are_live_when_loaded_unsafely(tmp_path, marker, hostile_pickle, packed):
    torch.load(hostile_pickle, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    forged = _forge_packed(packed, _dotted_gadget("optiforge.cli", "os.mkdir", str(marker)), tmp_path / "g.ofpk")
    with pytest.raises(PackedFileError):
        load_packed(forged, trusted=True)  # it runs the payload, then finds no module
    assert marker.is_dir()


def test_packed_default_mode_refuses_a_class_outside_the_allowlist(tmp_path, marker, packed):
    import pickle

    forged = _forge_packed(packed, pickle.dumps(Payload(marker), protocol=5), tmp_path / "evil.ofpk")
    with pytest.raises(PackedFileError, match=r"posix:mkdir|os:mkdir") as error:
        load_packed(forged)
    assert "runs code from the file" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [("optiforge.cli", "os.mkdir"), ("optiforge.cli", "os.system"), ("torch.nn.modules.linear", "torch.os.mkdir")],
)
def test_packed_refuses_dotted_name_gadgets_with_a_recomputed_checksum(tmp_path, marker, packed, module, name):
    argument = str(marker) if name.endswith("mkdir") else f"mkdir '{marker}'"
    forged = _forge_packed(packed, _dotted_gadget(module, name, argument), tmp_path / "gadget.ofpk")
    with pytest.raises(PackedFileError, match=f"uses {module}:{name}"):
        load_packed(forged)
    assert not marker.exists()


def test_packed_never_calls_an_allowlisted_class(tmp_path, packed):
    # Linear(4, 4) through REDUCE: module constructors are not called, only __new__ + __setstate__
    call = b"\x80\x04" + _unicode("torch.nn.modules.linear") + _unicode("Linear") + b"\x93K\x04K\x04\x86R."
    forged = _forge_packed(packed, call, tmp_path / "call.ofpk")
    with pytest.raises(PackedFileError, match="calls Linear"):
        load_packed(forged)


def test_packed_refuses_a_stored_forward_hook(tmp_path):
    import pickle
    from collections import OrderedDict

    valid = write_packed(nn.Linear(2, 2), tmp_path / "linear.ofpk")
    skeleton = nn.Linear(2, 2)
    skeleton._parameters = OrderedDict((name, None) for name in skeleton._parameters)
    skeleton._forward_hooks[0] = torch.nn.functional.relu  # allowlisted, yet it would run on every forward
    forged = _forge_packed(valid, pickle.dumps(skeleton, protocol=5), tmp_path / "hooked.ofpk")
    with pytest.raises(PackedFileError, match="carries _forward_hooks"):
        load_packed(forged)


def test_packed_round_trip_of_torch_layers_needs_no_trust(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(16, 8), nn.LayerNorm(8))
    model.append(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0))
    loaded = load_packed(write_packed(model.eval(), tmp_path / "layers.ofpk"))
    inputs = torch.randn(3, 1, 6)
    assert torch.equal(loaded(inputs), model(inputs))


def test_packed_rebuilds_optiforge_module_classes_without_trust(tmp_path):
    from optiforge.encoders.smoothing import SmoothedLinear

    torch.manual_seed(0)
    model = nn.Sequential(SmoothedLinear(nn.Linear(4, 4), torch.rand(4) + 0.5), nn.GELU())
    loaded = load_packed(write_packed(model, tmp_path / "smoothed.ofpk"))
    assert isinstance(loaded[0], SmoothedLinear)
    inputs = torch.randn(2, 4)
    assert torch.equal(loaded(inputs), model(inputs))


def test_quantized_state_with_code_is_refused(tmp_path, marker):
    path = tmp_path / "quantized.pt"
    torch.save({"format": FORMAT, "tensors": {"1.weight": Payload(marker)}}, path)
    with pytest.raises(ModelError, match=r"quantized state: .*holds Python objects other than tensors"):
        load_quantized_state(path)
    assert not marker.exists()


class _WithExtraState(nn.Linear):
    def get_extra_state(self):
        return Payload("never-created")

    def set_extra_state(self, state):
        pass


def test_quantized_state_is_saved_as_tensors_only_or_refused(tmp_path):
    from optiforge.quantization import save_quantized

    with pytest.raises(ModelError, match="'_extra_state' is a Payload"):
        save_quantized(_WithExtraState(2, 2), tmp_path / "extra.pt")
    assert not (tmp_path / "extra.pt").exists()
    path = save_quantized(nn.Linear(2, 2), tmp_path / "plain.pt")
    assert set(torch.load(path, weights_only=True)) == {"weight", "bias"}


def test_training_checkpoint_with_code_is_refused_on_resume(digits, tmp_path, marker, hostile_pickle):
    (tmp_path / "checkpoint.pt").write_bytes(hostile_pickle.read_bytes())
    model = optiforge.build_model(ModelConfig(**SMALL), digits)
    with pytest.raises(TrainingError, match="could run code"):
        optiforge.train(model, digits, ONE_EPOCH, checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(TrainingError, match="checkpoint: .*hostile.pt"):
        load_checkpoint(hostile_pickle)
    assert not marker.exists()


def test_model_checkpoint_with_code_is_refused(digits, marker, hostile_pickle):
    with pytest.raises(ModelError, match=r"model\.checkpoint: .*hostile.pt.*could run code"):
        optiforge.build_model(ModelConfig(**SMALL, checkpoint=str(hostile_pickle)), digits)
    assert not marker.exists()


def test_teacher_checkpoint_with_code_is_refused_before_training(digits, marker, hostile_pickle):
    spec = {**SMALL, "checkpoint": str(hostile_pickle)}
    with pytest.raises(ModelError, match=r"teacher\.checkpoint: .*could run code"):
        check_teacher(spec, digits)
    with pytest.raises(ModelError, match="could run code"):
        check_teacher(str(hostile_pickle), digits)
    with pytest.raises(ModelError, match="could run code"):
        resolve_teacher(str(hostile_pickle), digits)
    assert not marker.exists()


def test_teacher_check_names_an_unknown_model_or_missing_file(digits, tmp_path):
    with pytest.raises(optiforge.ConfigError, match="teacher.name"):
        check_teacher({"name": "nosuchmodel"}, digits)
    with pytest.raises(optiforge.ConfigError, match="teacher.checkpoint: no file"):
        check_teacher({**SMALL, "checkpoint": str(tmp_path / "absent.pt")}, digits)


def test_torchscript_teacher_file_needs_trust(digits, tmp_path):
    model = optiforge.build_model(ModelConfig(**SMALL), digits).eval()
    path = tmp_path / "teacher.ts"
    torch.jit.script(model).save(str(path))
    for call in (check_teacher, resolve_teacher):
        with pytest.raises(ModelError, match="runs code from the file"):
            call(str(path), digits)
    teacher = resolve_teacher(str(path), digits, trusted=True)
    inputs = digits.example_input(2)
    assert torch.equal(teacher(inputs), model(inputs))


def _state_file(tmp_path, name, value):
    path = tmp_path / name
    torch.save(value, path)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", r"'.*truncated.pt' is truncated"),
        ("empty", r"'.*empty.pt' is truncated or empty"),
        ("foreign", r"'.*foreign.pt' is not a PyTorch file of tensors"),
        ("list", r"'.*list.pt' holds a list, not a state dict"),
        ("wide", r"layer '1\.weight' has shape \(16, 64\) in the file and \(8, 64\) in the model: .*another recipe"),
        ("missing", r"it lacks '3\.bias', which the model has"),
        ("extra", r"it has 'extra\.weight', which the model lacks"),
    ],
)
def test_unusable_model_checkpoints_are_one_model_error(digits, tmp_path, kind, message):
    good = optiforge.build_model(ModelConfig(**SMALL), digits).state_dict()
    if kind == "truncated":
        path = _state_file(tmp_path, "truncated.pt", good)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "empty":
        path = tmp_path / "empty.pt"
        path.write_bytes(b"")
    elif kind == "foreign":
        path = tmp_path / "foreign.pt"
        path.write_text("model:\n  name: mlp\n")
    elif kind == "list":
        path = _state_file(tmp_path, "list.pt", [torch.zeros(2)])
    elif kind == "wide":
        wide = optiforge.build_model(ModelConfig(name="mlp", hidden=[16]), digits)
        path = _state_file(tmp_path, "wide.pt", wide.state_dict())
    elif kind == "missing":
        path = _state_file(tmp_path, "missing.pt", {name: value for name, value in good.items() if name != "3.bias"})
    else:
        path = _state_file(tmp_path, "extra.pt", {**good, "extra.weight": torch.zeros(1)})
    with pytest.raises(ModelError, match=message):
        optiforge.build_model(ModelConfig(**SMALL, checkpoint=str(path)), digits)
    with pytest.raises(ModelError, match=message):
        check_teacher({**SMALL, "checkpoint": str(path)}, digits)


def _trained_checkpoint(digits, folder, hidden):
    model = optiforge.build_model(ModelConfig(name="mlp", hidden=hidden), digits)
    optiforge.train(model, digits, ONE_EPOCH, checkpoint_dir=folder, progress=False)
    return folder / "checkpoint.pt"


def _resume(digits, folder, hidden=(8,)):
    model = optiforge.build_model(ModelConfig(name="mlp", hidden=list(hidden)), digits)
    config = TrainConfig(epochs=2, batch_size=256)
    return optiforge.train(model, digits, config, checkpoint_dir=folder, resume=True, progress=False)


def test_resume_from_another_recipe_names_the_layer_and_shapes(digits, tmp_path):
    _trained_checkpoint(digits, tmp_path, [16])
    with pytest.raises(TrainingError) as error:
        _resume(digits, tmp_path)
    text = str(error.value)
    assert "checkpoint.pt" in text and "\n" not in text
    assert "layer '1.weight' has shape (16, 64) in the file and (8, 64) in the model" in text


def test_resume_from_a_checkpoint_with_missing_keys_or_foreign_content(digits, tmp_path):
    path = _trained_checkpoint(digits, tmp_path, [8])
    saved = torch.load(path, weights_only=True)
    del saved["model"]["3.bias"]
    torch.save(saved, path)
    with pytest.raises(TrainingError, match=r"does not fit this run: it lacks '3\.bias'"):
        _resume(digits, tmp_path)
    torch.save(saved["model"], path)  # a bare state dict is not a training checkpoint
    with pytest.raises(TrainingError, match=r"not an optiforge training checkpoint \(it lacks 'epoch'"):
        _resume(digits, tmp_path)
    saved["model"]["3.bias"] = torch.zeros(10)
    saved["schedule"] = {}
    torch.save(saved, path)
    with pytest.raises(TrainingError, match=r"does not fit this run \(KeyError: 'step'\)"):
        _resume(digits, tmp_path)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(TrainingError, match="checkpoint: .*checkpoint.pt"):
        _resume(digits, tmp_path)


def test_a_matching_checkpoint_still_resumes(digits, tmp_path):
    _trained_checkpoint(digits, tmp_path, [8])
    result = _resume(digits, tmp_path)
    assert result.epochs_run >= 1 and isinstance(result.model, nn.Module)
