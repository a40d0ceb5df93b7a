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

The baseline a user already has is ``SentenceTransformer.encode`` in
float32 on the whole list of sentences (it sorts them by length itself);
each round times one full pass of it beside one full pass of every engine
over the batches, in data order and again length-sorted, and the tables
give every engine's speed-up over it. Its sentences are the evaluation
token ids decoded back to text (the tokenizer is uncased, so they
re-tokenize to the same ids). OpenVINO runs in bf16 where the CPU has bf16
units (f32 otherwise, and the row says so) and in int8 through NNCF,
calibrated on training sentences; on such a CPU the PyTorch encoder with its
weights cast to bf16 is a peer too.

Besides the recipe's result, every candidate graph the recipe's search kept in
its run folder (``search/nodes/``: the chosen one; every front point's for a run
given as ``--run`` of ``optiforge run minilm --set stages.0.search.keep=front``) is
measured in the same rounds, so the trade-off plot (speed vs cosine) shows them
next to the peers.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

import optiforge
from optiforge.bench.timing import interleaved, speedups
from optiforge.encoders import fidelity, load_sentence_encoder, pack, unpack
from optiforge.encoders.batches import batches_from
from optiforge.encoders.loading import load_tokenizer, package_folder
from optiforge.encoders.onnx_export import export_sentence_encoder
from optiforge.encoders.openvino_export import OpenVinoSentenceEncoder, openvino_sentence_encoder
from optiforge.encoders.openvino_runtime import resolved_precision
from optiforge.encoders.runtime import OnnxSentenceEncoder
from optiforge.hardware.capabilities import cpu_has_bf16


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


def openvino_peers(encoder: nn.Module, folder: Path, calibration: list[torch.Tensor]) -> dict[str, nn.Module]:
    from optiforge.exporters.openvino import bf16_supported

    precision = "bf16" if bf16_supported() else "f32"
    return {
        f"OpenVINO ({precision})": openvino_sentence_encoder(
            encoder, folder / "openvino-float.xml", precision=precision, example=calibration[0]
        ),
        "OpenVINO int8 (NNCF)": openvino_sentence_encoder(
            encoder, folder / "openvino-int8.xml", scheme="int8_static", calibration=calibration
        ),
    }


class Bf16Encoder(nn.Module):
    """The PyTorch encoder with its weights cast to bf16 (one line for a user), float32 embeddings out."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).to(torch.bfloat16)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.encoder(batch).float()


def shipped(run_dir: Path, artifact: str, name: str, threads: int) -> nn.Module:
    """The runtime a run's search chose, as it ran there: an ONNX graph, or an IR in the precision it named."""
    path = run_dir / artifact
    if path.suffix != ".xml":
        return OnnxSentenceEncoder(path, threads)
    precision = next((p for p in ("bf16", "auto") if f'"precision": "{p}"' in name), "f32")
    return OpenVinoSentenceEncoder(path, resolved_precision(precision), threads)


def sentence_transformers_baseline(texts: list[str]):
    """``SentenceTransformer.encode`` in float32 over all ``texts`` (it sorts them by length itself)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(package_folder()), device="cpu")
    return lambda: torch.as_tensor(model.encode(texts, batch_size=32, convert_to_numpy=True))


@torch.inference_mode()
def timed_passes(
    models: dict[str, nn.Module], batches: list[torch.Tensor], baseline, rounds: int
) -> dict[str, list[float]]:
    """Seconds of each round's full pass over ``batches``, per engine and for ``baseline`` on the same sentences."""
    passes = {BASELINE: baseline} | {
        name: (lambda model=model: [model(batch) for batch in batches]) for name, model in models.items()
    }
    return interleaved(passes, rounds=rounds, repeats=1, warmup=1)


def file_size(model: nn.Module, folder: Path, name: str) -> int:
    if isinstance(model, OnnxSentenceEncoder):
        return model.path.stat().st_size
    if hasattr(model, "path") and model.path.suffix == ".xml":  # OpenVINO IR: graph and weights
        return model.path.stat().st_size + model.path.with_suffix(".bin").stat().st_size
    path = folder / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return path.stat().st_size


ONNX_PEER = "ONNX Runtime dynamic int8 (per-channel)"
BASELINE = "SentenceTransformer.encode float32"


def padding_share(batches: list[torch.Tensor]) -> float:
    masks = [unpack(batch)[1] for batch in batches]
    return 1.0 - sum(int(mask.sum()) for mask in masks) / sum(mask.numel() for mask in masks)


@torch.inference_mode()
def timed_rounds(models: dict[str, nn.Module], batches: list[torch.Tensor], rounds: int) -> dict[str, list[float]]:
    """Seconds of every batch of every round per engine; the engines take each batch in turn."""
    for model in models.values():  # warm-up: first-call allocations and lazy packing
        model(batches[0])
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for batch in batches:
            runs = {name: functools.partial(model, batch) for name, model in models.items()}
            for name, times in interleaved(runs, rounds=1, repeats=1, warmup=0).items():
                seconds[name] += times
    return seconds


def ms_per_batch(times: list[float]) -> float:
    return 1000 * sum(times) / len(times)


def plot(rows: list[dict], path: Path) -> None:
    """Speed-up against cosine loss (1 - mean cosine, log scale; float32 itself has none and is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for row in rows:
        loss = 1.0 - row["cosine"]
        if loss <= 1e-6 or "speedup" not in row:
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
    stage = report["stages"][-1]  # the search's row: the artefact it shipped (an ONNX graph or an IR)
    result_path = run_dir / (stage.get("artifact") or report["exports"][0]["artifact"])
    chosen = stage.get("chosen", "?")

    data = optiforge.build_data(optiforge.DataConfig(**report["config"]["data"]))
    batches, reference_from_data = batches_from(data.test, 32)
    encoder = load_sentence_encoder()
    train_inputs = torch.stack([data.train[index][0] for index in range(min(len(data.train), 256))])
    calibration = [pack(*unpack(train_inputs[start : start + 32])) for start in range(0, len(train_inputs), 32)]
    models: dict[str, nn.Module] = {
        "float32 PyTorch": encoder,
        **({"PyTorch bf16 (weights cast)": Bf16Encoder(encoder)} if cpu_has_bf16() else {}),
        "PyTorch dynamic int8": torch_dynamic_int8(encoder),
        "torchao int8 dynamic": torchao(encoder, weight_only=False),
        "torchao int8 weight-only": torchao(encoder, weight_only=True),
        ONNX_PEER: onnxruntime_dynamic_int8(encoder, work, batches[0]),
        **openvino_peers(encoder, work, calibration),
        "optiforge minilm": shipped(run_dir, str(result_path.relative_to(run_dir)), chosen, arguments.threads),
    }
    search_json = run_dir / "search" / "search.json"
    if search_json.is_file() and not arguments.no_candidates:  # every candidate the recipe's search built
        for index, row in enumerate(json.loads(search_json.read_text())["candidates"]):
            if (row.get("artifact") or "").endswith((".onnx", ".xml")):
                label = f"optiforge candidate {index}: {row['name']}"
                models[label] = shipped(run_dir / "search", row["artifact"], row["name"], arguments.threads)
    with torch.inference_mode():
        reference = torch.cat([encoder(batch) for batch in batches])
    assert torch.allclose(reference, reference_from_data, atol=1e-5)
    rows = []
    for name, model in models.items():
        with torch.inference_mode():
            embeddings = torch.cat([torch.as_tensor(model(batch)).float() for batch in batches])
        rows.append({"engine": name, **fidelity(embeddings, reference), "size_bytes": file_size(model, work, name)})
    seconds = timed_rounds(models, batches, arguments.rounds)
    over_float = speedups(seconds, "float32 PyTorch")
    for row in rows[: len(models)]:
        row["speedup"] = over_float[row["engine"]]
        row["ms_per_batch"] = ms_per_batch(seconds[row["engine"]])
    sentences = sum(int(unpack(batch)[1].shape[0]) for batch in batches)
    tokenizer = load_tokenizer()
    texts = [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for batch in batches
        for ids, mask in zip(*unpack(batch), strict=True)
    ]
    baseline = sentence_transformers_baseline(texts)
    rows.append(
        {"engine": BASELINE, **fidelity(baseline().float(), reference), "size_bytes": file_size(encoder, work, "st")}
    )
    sorted_batches, _ = batches_from(data.test, 32, length_sorted=True)
    for feeding, feed in (("data order", batches), ("length-sorted", sorted_batches)):
        over_encode = speedups(timed_passes(models, feed, baseline, arguments.rounds), BASELINE)
        for row in rows:
            row[f"speedup_over_encode ({feeding})"] = over_encode[row["engine"]]
    print(
        f"{sentences} sentences, batch 32, {arguments.threads} threads, {arguments.rounds} rounds; "
        f"result: {result_path} ({chosen})"
    )
    print(f"speed-ups over {BASELINE} (whole list, its own length sorting); engines fed batches of 32")
    print(
        "| engine | over encode(), data order | over encode(), length-sorted | over float32 PyTorch | "
        "ms / batch | mean cosine | top-10 neighbours kept | size (MB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        over_pytorch = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
        milliseconds = f"{row['ms_per_batch']:.0f}" if "ms_per_batch" in row else "-"
        print(
            f"| {row['engine']} | {row['speedup_over_encode (data order)']:.2f}x | "
            f"{row['speedup_over_encode (length-sorted)']:.2f}x | {over_pytorch} | {milliseconds} | "
            f"{row['cosine']:.4f} | {100 * row['neighbours_kept']:.1f}% | {row['size_bytes'] / 1e6:.1f} |"
        )
    # sentence-transformers' encode() sorts sentences by length before batching, which removes most
    # padding on its own; the same engines on such batches show what remove_padding adds there
    compared = {name: models[name] for name in ("float32 PyTorch", ONNX_PEER, "optiforge minilm")}
    sorted_seconds = timed_rounds(compared, sorted_batches, arguments.rounds)
    sorted_over_float = speedups(sorted_seconds, "float32 PyTorch")
    print(
        f"\nlength-sorted batches of 32 (padding {padding_share(sorted_batches):.0%} of positions, "
        f"against {padding_share(batches):.0%} above):"
    )
    print("| engine | speed-up | ms / batch |")
    print("| --- | --- | --- |")
    for name, times in sorted_seconds.items():
        print(f"| {name} | {sorted_over_float[name]:.2f}x | {ms_per_batch(times):.0f} |")
        next(row for row in rows if row["engine"] == name)["speedup_length_sorted"] = sorted_over_float[name]
    (arguments.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, arguments.out / "minilm_tradeoff.png")


if __name__ == "__main__":
    main()
