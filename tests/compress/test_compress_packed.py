"""The packed format: bit-exact round trips, the encodings compression needs, refusing bad files."""

import io

import pytest
import torch
from torch import nn

import optiforge
from optiforge.compress import (
    PackedFileError,
    PruneConfig,
    ShareConfig,
    describe_packed,
    load_packed,
    prune,
    prune_with_result,
    read_packed_tensors,
    share,
    share_with_result,
    write_packed,
)


def _bits(tensor):
    return tensor.detach().contiguous().view(-1).view(torch.uint8)


def _compressed_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    prune(model, PruneConfig(sparsity=0.9))
    share(model, ShareConfig(clusters=16))
    return model.eval()


def test_round_trip_is_bit_exact_and_outputs_identical(tmp_path):
    model = _compressed_mlp()
    path = write_packed(model, tmp_path / "model.ofpk")
    loaded = load_packed(path)
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(original) == list(restored)
    for name in original:
        assert torch.equal(_bits(original[name]), _bits(restored[name])), name
    inputs = torch.randn(32, 64)
    assert torch.equal(loaded(inputs), model(inputs))


def test_sparse_and_shared_tensors_use_positions_and_log2k_bit_indices(tmp_path):
    path = write_packed(_compressed_mlp(), tmp_path / "model.ofpk")
    records = {record["name"]: record for record in describe_packed(path)["tensors"]}
    assert records["1.weight"]["encoding"] == "sparse_shared"
    assert records["1.weight"]["bits"] == 4  # ⌈log2 16⌉
    assert records["1.weight"]["position_code"] in {"bitmap", "gaps"}
    stored = int((_compressed_mlp()[1].weight != 0).sum())
    assert records["1.weight"]["indices"][1] == -(-stored * 4 // 8)
    assert records["1.bias"]["encoding"] == "dense"


def test_packed_file_is_much_smaller_than_the_float_state_dict(tmp_path):
    model = _compressed_mlp()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    size = write_packed(model, tmp_path / "model.ofpk").stat().st_size
    assert size * 10 < len(buffer.getvalue())


def test_buffers_negative_zero_tied_weights_and_integer_tensors_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(152, 152), nn.Linear(152, 152))
    model[4].weight = model[3].weight  # tied
    model[1].running_mean.uniform_()
    model[1].num_batches_tracked.fill_(7)
    with torch.no_grad():
        model[0].weight.view(-1)[0] = -0.0
        model[3].weight[0] = 0.5  # a row of exact float16 values
    path = write_packed(model, tmp_path / "model.ofpk")
    loaded = load_packed(path)
    assert loaded[4].weight is loaded[3].weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(_bits(tensor), _bits(loaded.state_dict()[name])), name
    assert read_packed_tensors(path)["1.num_batches_tracked"].item() == 7


def test_float32_values_that_are_exact_float16_are_stored_in_two_bytes(tmp_path):
    model = nn.Linear(256, 256)
    with torch.no_grad():
        model.weight.copy_(model.weight.half().float())
    path = write_packed(model, tmp_path / "m.ofpk")
    record = next(r for r in describe_packed(path)["tensors"] if r["name"] == "weight")
    assert record["stored_as"] == "float16"
    assert torch.equal(load_packed(path).weight, model.weight)


def test_loading_into_a_given_model(tmp_path):
    model = _compressed_mlp()
    path = write_packed(model, tmp_path / "model.ofpk")
    target = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    load_packed(path, target)
    assert torch.equal(target[3].weight, model[3].weight)
    with pytest.raises(PackedFileError, match="does not fit"):
        load_packed(path, nn.Sequential(nn.Linear(64, 10)))


@pytest.mark.parametrize("position", [20, 100, -5])
def test_a_corrupted_file_is_refused(tmp_path, position):
    path = write_packed(_compressed_mlp(), tmp_path / "model.ofpk")
    content = bytearray(path.read_bytes())
    content[position] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(PackedFileError, match="corrupted"):
        load_packed(path)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = write_packed(_compressed_mlp(), tmp_path / "model.ofpk")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(PackedFileError, match="corrupted"):
        load_packed(path)
    other = tmp_path / "other.ofpk"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(PackedFileError, match="not an optiforge packed file"):
        load_packed(other)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x):
        return self.layer(x) * 2


def test_unknown_classes_are_not_rebuilt_unless_trusted(tmp_path):
    path = write_packed(Custom(), tmp_path / "custom.ofpk")
    with pytest.raises(PackedFileError, match="trusted=True"):
        load_packed(path)
    loaded = load_packed(path, trusted=True)
    assert isinstance(loaded, Custom)
    assert torch.equal(load_packed(path, Custom()).layer.bias, loaded.layer.bias)


def test_export_format_packed_and_lazy_verbs(tmp_path):
    model = _compressed_mlp()
    path = optiforge.export(model, tmp_path / "m.ofpk", format="packed")
    assert torch.equal(optiforge.load_packed(path)[5].weight, model[5].weight)
    assert describe_packed(path)["compression"] == []  # a bare export records nothing it was not told


def test_packed_file_records_the_applied_configs_given_to_the_writer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    pruned = prune_with_result(model, PruneConfig(sparsity=0.8, layers={"exclude": ["2"]}))
    shared = share_with_result(pruned.model, ShareConfig(clusters=8))
    path = write_packed(shared.model, tmp_path / "m.ofpk", applied=[pruned.applied, shared.applied])
    assert describe_packed(path)["compression"] == [
        {"prune": {"sparsity": 0.8, "layers": {"exclude": ["2"]}}},
        {"share": {"clusters": 8}},
    ]
