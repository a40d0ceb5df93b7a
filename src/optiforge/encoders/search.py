"""Choose a runtime configuration by measuring, not guessing.

Every candidate is built, run on the validation sentences for fidelity and
timed at the target batch size interleaved with the float PyTorch model
(batch by batch, round after round), so a machine whose load changes during
the search slows both sides alike and the speed ratios stay comparable.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from optiforge.encoders.fidelity import fidelity
from optiforge.encoders.module import pack, unpack
from optiforge.errors import ConfigError

log = logging.getLogger("optiforge")


@dataclass
class Candidate:
    config: dict
    cosine: float
    neighbours_kept: float
    speedup: float
    size_bytes: int
    meets: bool = False


@dataclass
class SearchResult:
    model: nn.Module
    chosen: int
    candidates: list[Candidate] = field(default_factory=list)

    def summary(self) -> dict:
        return {"chosen": self.chosen, "candidates": [vars(candidate) for candidate in self.candidates]}


def batches_from(
    dataset: Dataset, batch_size: int, length_sorted: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Packed batches (each trimmed to its longest sentence) and the reference embeddings, in batch order.

    ``length_sorted`` batches the sentences longest first, as sentence-transformers'
    ``encode()`` does, so that each batch holds little padding.
    """
    inputs = torch.stack([dataset[index][0] for index in range(len(dataset))])  # (N, 2, longest)
    targets = torch.stack([dataset[index][1] for index in range(len(dataset))])
    if length_sorted:
        order = torch.argsort(inputs[:, 1].sum(dim=1), descending=True, stable=True)
        inputs, targets = inputs[order], targets[order]
    batches = [pack(*unpack(inputs[start : start + batch_size])) for start in range(0, len(inputs), batch_size)]
    return batches, targets


@torch.inference_mode()
def interleaved_speedup(reference: nn.Module, candidate: nn.Module, batches: list[torch.Tensor], rounds: int) -> float:
    """Reference time / candidate time, the two timed batch by batch in turn (after one warm-up batch)."""
    reference(batches[0])
    candidate(batches[0])
    reference_seconds = candidate_seconds = 0.0
    for _ in range(rounds):
        for batch in batches:
            start = time.perf_counter()
            reference(batch)
            middle = time.perf_counter()
            candidate(batch)
            reference_seconds += middle - start
            candidate_seconds += time.perf_counter() - middle
    return reference_seconds / candidate_seconds


def search_runtime(
    encoder: nn.Module, config, calibration: list[torch.Tensor], validation: Dataset, folder: Path
) -> SearchResult:
    """Build and measure ``config.candidates``; keep the fastest meeting the floors (else the most faithful)."""
    from optiforge.encoders.optimize import optimize_encoder

    if len(validation) < 2:
        raise ConfigError("encoder_search: the validation split needs at least 2 sentences (data.val_size)")
    folder.mkdir(parents=True, exist_ok=True)
    batches, reference = batches_from(validation, config.batch_size, config.length_sorted)
    encoder.eval()
    candidates: list[Candidate] = []
    paths: list[Path] = []
    for index, candidate_config in enumerate(config.candidates):
        model = optimize_encoder(encoder, candidate_config, calibration, path=folder / f"candidate-{index}.onnx")
        with torch.inference_mode():
            embeddings = torch.cat([model(batch) for batch in batches])
        scores = fidelity(embeddings, reference)
        speedup = interleaved_speedup(encoder, model, batches, config.timing_rounds)
        measured = Candidate(
            config=candidate_config.model_dump(exclude_unset=True),
            cosine=scores["cosine"],
            neighbours_kept=scores["neighbours_kept"],
            speedup=speedup,
            size_bytes=model.path.stat().st_size,
            meets=scores["cosine"] >= config.min_cosine and scores["neighbours_kept"] >= config.min_neighbours_kept,
        )
        log.info(
            "encoder_search: candidate %d %s: cosine %.4f, neighbours %.3f, %.2fx",
            index,
            measured.config,
            measured.cosine,
            measured.neighbours_kept,
            measured.speedup,
        )
        candidates.append(measured)
        paths.append(model.path)
        del model
    faithful = [index for index, candidate in enumerate(candidates) if candidate.meets]
    if faithful:
        chosen = max(faithful, key=lambda index: candidates[index].speedup)
    else:
        log.warning(
            "encoder_search: no candidate meets cosine >= %s and neighbours >= %s; keeping the most faithful",
            config.min_cosine,
            config.min_neighbours_kept,
        )
        chosen = max(range(len(candidates)), key=lambda index: candidates[index].cosine)
    for index, path in enumerate(paths):  # float candidates are ~90 MB each; keep the chosen one only
        if index != chosen:
            path.unlink(missing_ok=True)
    final = folder / "encoder.onnx"
    paths[chosen].replace(final)
    (folder / "search.json").write_text(
        json.dumps({"chosen": chosen, "candidates": [vars(c) for c in candidates]}, indent=2) + "\n"
    )
    plot_search(candidates, chosen, folder / "search_tradeoff.png", config.min_cosine)
    from optiforge.encoders.runtime import OnnxSentenceEncoder

    session = config.candidates[chosen].session
    model = OnnxSentenceEncoder(final, session.threads, info={"search_choice": chosen}, spinning=session.spinning)
    return SearchResult(model, chosen, candidates)


def plot_search(candidates: list[Candidate], chosen: int, path: Path, min_cosine: float) -> Path | None:
    """Speed-up against cosine, one point per candidate, the chosen one marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for index, candidate in enumerate(candidates):
        marker = "*" if index == chosen else ("o" if candidate.meets else "x")
        axis.scatter(candidate.cosine, candidate.speedup, marker=marker, s=140 if index == chosen else 50)
        axis.annotate(str(index), (candidate.cosine, candidate.speedup), textcoords="offset points", xytext=(5, 4))
    axis.axvline(min_cosine, linestyle="--", color="grey", linewidth=1)
    axis.set_xlabel("mean cosine to float32 embeddings")
    axis.set_ylabel("speed-up over float32 PyTorch (batch 32)")
    axis.set_title("encoder_search candidates (* chosen, x below the fidelity floors)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
