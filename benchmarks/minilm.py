"""all-MiniLM-L6-v2 on CPU: float32 PyTorch, the usual int8 engines and optiforge's result, in one run.

Every engine encodes the same evaluation sentences (Python documentation
prose, ``data: {name: sentences}``) in batches of 32, each padded to its
longest sentence. Fidelity is measured against the float32 PyTorch
embeddings: mean cosine and the share of each sentence's 10 nearest
neighbours (among the evaluation sentences) that is kept. Speed is timed in
rounds: within a round every engine encodes each batch in turn, so load from
other processes on a shared CPU falls on all engines alike; the ratio is
float32 PyTorch time / engine time over all rounds. Size is the bytes of the
file each engine ships.

    .venv/bin/python benchmarks/minilm.py                      # runs the minilm recipe first
    .venv/bin/python benchmarks/minilm.py --run runs/minilm    # reuses a finished run's export

Besides the recipe's result, every candidate configuration of the recipe's
``encoder_search`` stage is rebuilt and measured in the same rounds, so the
trade-off plot (speed vs cosine) shows them next to the peers.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import optiforge
from optiforge.encoders import fidelity, load_sentence_encoder, pack, unpack
from optiforge.encoders.onnx_export import export_sentence_encoder
from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder
from optiforge.encoders.runtime import OnnxSentenceEncoder
from optiforge.encoders.search import batches_from


def torch_dynamic_int8(encoder: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return quantize_dynamic(copy.deepcopy(encoder), {nn.Linear}, dtype=torch.qint8)


def torchao(encoder: nn.Module, weight_only: bool) -> nn.Module:
    import torchao.quantization as ao
    from torchao.quantization.granularity import PerRow

    model = copy.deepcopy(encoder)
    config = (
        ao.Int8WeightOnlyConfig(granularity=PerRow())
        if weight_only
        else ao.Int8DynamicActivationInt8WeightConfig(granularity=PerRow())
    )
    ao.quantize_(model, config, filter_fn=lambda module, name: isinstance(module, nn.Linear) and "pooler" not in name)
    return model


def onnxruntime_dynamic_int8(encoder: nn.Module, folder: Path, example: torch.Tensor) -> OnnxSentenceEncoder:
    """ONNX Runtime's quantize_dynamic as its documentation shows it: per-channel int8, no fusion."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = export_sentence_encoder(encoder, folder / "ort-float.onnx", example)
    quantize_dynamic(str(float_path), str(folder / "ort-int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    return OnnxSentenceEncoder(folder / "ort-int8.onnx")


def file_size(model: nn.Module, folder: Path, name: str) -> int:
    if isinstance(model, OnnxSentenceEncoder):
        return model.path.stat().st_size
    path = folder / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return path.stat().st_size


ONNX_PEER = "ONNX Runtime dynamic int8 (per-channel)"


def padding_share(batches: list[torch.Tensor]) -> float:
    masks = [unpack(batch)[1] for batch in batches]
    return 1.0 - sum(int(mask.sum()) for mask in masks) / sum(mask.numel() for mask in masks)


@torch.inference_mode()
def timed_rounds(models: dict[str, nn.Module], batches: list[torch.Tensor], rounds: int) -> dict[str, float]:
    seconds = dict.fromkeys(models, 0.0)
    for model in models.values():  # warm-up: first-call allocations and lazy packing
        model(batches[0])
    for _ in range(rounds):
        for batch in batches:
            for name, model in models.items():
                start = time.perf_counter()
                model(batch)
                seconds[name] += time.perf_counter() - start
    return seconds


def plot(rows: list[dict], path: Path) -> None:
    """Speed-up against cosine loss (1 - mean cosine, log scale; float32 itself has none and is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for row in rows:
        loss = 1.0 - row["cosine"]
        if loss <= 1e-6:
            continue
        axis.scatter(loss, row["speedup"], s=60, marker="*" if row["engine"] == "optiforge minilm" else "o")
        label = row["engine"].split(":")[0]
        axis.annotate(label, (loss, row["speedup"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    axis.axvline(0.005, linestyle="--", color="grey", linewidth=1)
    axis.axhline(2.5, linestyle="--", color="grey", linewidth=1)
    axis.set_xscale("log")
    axis.invert_xaxis()  # more faithful to the right
    axis.set_xlabel("1 - mean cosine to float32 embeddings (log scale, reversed)")
    axis.set_ylabel("speed-up over float32 PyTorch, batch 32")
    axis.set_title("all-MiniLM-L6-v2 on CPU: speed vs fidelity (goal: upper right of the dashed lines)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished 'optiforge run minilm' folder to take the result from")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-candidates", action="store_true", help="measure the recipe's result only")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("minilm-results"))
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(arguments.threads)
    arguments.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="minilm-bench-"))

    run_dir = arguments.run
    if run_dir is None:
        run_dir = work / "run"
        optiforge.run_recipe("minilm", out=run_dir, progress=False, show_table=False)
    report = json.loads((run_dir / "report.json").read_text())
    result_path = run_dir / report["exports"][0]["artifact"]

    data = optiforge.build_data(optiforge.DataConfig(**report["config"]["data"]))
    batches, reference_from_data = batches_from(data.test, 32)
    encoder = load_sentence_encoder()
    models: dict[str, nn.Module] = {
        "float32 PyTorch": encoder,
        "PyTorch dynamic int8": torch_dynamic_int8(encoder),
        "torchao int8 dynamic": torchao(encoder, weight_only=False),
        "torchao int8 weight-only": torchao(encoder, weight_only=True),
        ONNX_PEER: onnxruntime_dynamic_int8(encoder, work, batches[0]),
        "optiforge minilm": OnnxSentenceEncoder(result_path, arguments.threads),
    }
    search = next((stage["encoder_search"] for stage in report["config"]["stages"] if "encoder_search" in stage), None)
    if search and not arguments.no_candidates:
        train_inputs = torch.stack([data.train[index][0] for index in range(min(len(data.train), 256))])
        calibration = [pack(*unpack(train_inputs[start : start + 32])) for start in range(0, len(train_inputs), 32)]
        for index, candidate in enumerate(search["candidates"]):
            config = EncoderRuntimeConfig(**candidate)
            settings = {"quantize": config.quantize, **config.model_dump(exclude_defaults=True)}
            label = f"optiforge candidate {index}: " + ", ".join(f"{key}={value}" for key, value in settings.items())
            models[label] = optimize_encoder(encoder, config, calibration, path=work / f"candidate-{index}.onnx")
    with torch.inference_mode():
        reference = torch.cat([encoder(batch) for batch in batches])
    assert torch.allclose(reference, reference_from_data, atol=1e-5)
    rows = []
    for name, model in models.items():
        with torch.inference_mode():
            embeddings = torch.cat([torch.as_tensor(model(batch)).float() for batch in batches])
        rows.append({"engine": name, **fidelity(embeddings, reference), "size_bytes": file_size(model, work, name)})
    seconds = timed_rounds(models, batches, arguments.rounds)
    for row in rows:
        row["speedup"] = seconds["float32 PyTorch"] / seconds[row["engine"]]
        row["ms_per_batch"] = 1000 * seconds[row["engine"]] / (arguments.rounds * len(batches))
    sentences = sum(int(unpack(batch)[1].shape[0]) for batch in batches)
    print(
        f"{sentences} sentences, batch 32, {arguments.threads} threads, {arguments.rounds} rounds; "
        f"result: {result_path} ({report['stages'][-1].get('search', {}).get('chosen', '?')})"
    )
    print("| engine | speed-up | ms / batch | mean cosine | top-10 neighbours kept | size (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['engine']} | {row['speedup']:.2f}x | {row['ms_per_batch']:.0f} | {row['cosine']:.4f} | "
            f"{100 * row['neighbours_kept']:.1f}% | {row['size_bytes'] / 1e6:.1f} |"
        )
    # sentence-transformers' encode() sorts sentences by length before batching, which removes most
    # padding on its own; the same engines on such batches show what remove_padding adds there
    sorted_batches, _ = batches_from(data.test, 32, length_sorted=True)
    compared = {name: models[name] for name in ("float32 PyTorch", ONNX_PEER, "optiforge minilm")}
    sorted_seconds = timed_rounds(compared, sorted_batches, arguments.rounds)
    print(
        f"\nlength-sorted batches of 32 (padding {padding_share(sorted_batches):.0%} of positions, "
        f"against {padding_share(batches):.0%} above):"
    )
    print("| engine | speed-up | ms / batch |")
    print("| --- | --- | --- |")
    for name, value in sorted_seconds.items():
        milliseconds = 1000 * value / (arguments.rounds * len(sorted_batches))
        print(f"| {name} | {sorted_seconds['float32 PyTorch'] / value:.2f}x | {milliseconds:.0f} |")
        next(row for row in rows if row["engine"] == name)["speedup_length_sorted"] = (
            sorted_seconds["float32 PyTorch"] / value
        )
    (arguments.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, arguments.out / "minilm_tradeoff.png")


if __name__ == "__main__":
    main()
