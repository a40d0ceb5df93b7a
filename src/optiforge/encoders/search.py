"""Choose a runtime configuration by measuring, not guessing.

Every candidate is built, run on the validation sentences for fidelity and
timed at the target batch size interleaved with the float PyTorch model
(batch by batch, round after round, :func:`optiforge.bench.timing.interleaved`),
so a machine whose load changes during the search slows both sides alike and
the speed ratios stay comparable. The pick is :func:`optiforge.bench.selection.select`:
the fastest candidate meeting both fidelity floors; when none does, the float
PyTorch encoder ships unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from optiforge.bench.selection import Candidate, Selection, select
from optiforge.bench.timing import interleaved, speedups
from optiforge.encoders.fidelity import fidelity
from optiforge.encoders.module import pack, unpack
from optiforge.errors import ConfigError
from optiforge.files import atomic_write_text

log = logging.getLogger("optiforge")

REFERENCE = "float"


@dataclass
class SearchResult:
    """The encoder that ships (the chosen candidate, or the float encoder) and how it was chosen."""

    model: nn.Module
    selection: Selection
    artifact: Path | None = None

    @property
    def chosen(self) -> int | None:
        """Index of the chosen candidate; ``None`` when the float encoder ships."""
        return None if self.selection.chosen is None else self.selection.candidates.index(self.selection.chosen)

    def summary(self) -> dict:
        return {
            "chosen": REFERENCE if self.chosen is None else self.chosen,
            "reason": self.selection.reason,
            "candidates": [candidate.summary() for candidate in self.selection.candidates],
        }


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
def speedup_over(reference: nn.Module, candidate: nn.Module, batches: list[torch.Tensor], rounds: int) -> float:
    """Reference time / candidate time, the two timed batch by batch in turn (after one warm-up batch)."""
    reference(batches[0])
    candidate(batches[0])
    runs = {}
    for index, batch in enumerate(batches):
        runs[f"{REFERENCE}/{index}"] = lambda batch=batch: reference(batch)
        runs[f"candidate/{index}"] = lambda batch=batch: candidate(batch)
    times = interleaved(runs, rounds=rounds, warmup=0)
    per_side = {
        side: [t for name, values in times.items() if name.startswith(side + "/") for t in values]
        for side in (REFERENCE, "candidate")
    }
    return speedups(per_side, REFERENCE)["candidate"]


def search_runtime(
    encoder: nn.Module, config, calibration: list[torch.Tensor], validation: Dataset, folder: Path
) -> SearchResult:
    """Build and measure ``config.candidates``; keep the fastest meeting the floors, else the float encoder."""
    from optiforge.encoders.optimize import optimize_encoder
    from optiforge.encoders.runtime import OnnxSentenceEncoder

    if len(validation) < 2:
        raise ConfigError("encoder_search: the validation split needs at least 2 sentences (data.val_size)")
    for index, candidate_config in enumerate(config.candidates):  # a misspelt layer fails before any build
        candidate_config.layers.check(encoder, f"candidates[{index}].layers")
        if candidate_config.smoothing is not None:
            candidate_config.smoothing.layers.check(encoder, f"candidates[{index}].smoothing.layers")
    folder.mkdir(parents=True, exist_ok=True)
    batches, reference = batches_from(validation, config.batch_size, config.length_sorted)
    encoder.eval()
    constraint = f"cosine >= {config.min_cosine} and neighbours kept >= {config.min_neighbours_kept}"
    candidates: list[Candidate] = []
    for index, candidate_config in enumerate(config.candidates):
        path = folder / f"candidate-{index}.onnx"
        model = optimize_encoder(encoder, candidate_config, calibration, path=path)
        with torch.inference_mode():
            embeddings = torch.cat([model(batch) for batch in batches])
        scores = fidelity(embeddings, reference)
        speedup = speedup_over(encoder, model, batches, config.timing_rounds)
        figures = {
            "config": candidate_config.model_dump(exclude_unset=True),
            "cosine": scores["cosine"],
            "neighbours_kept": scores["neighbours_kept"],
            "speedup": speedup,
            "size_bytes": path.stat().st_size,
        }
        accepted = scores["cosine"] >= config.min_cosine and scores["neighbours_kept"] >= config.min_neighbours_kept
        candidates.append(Candidate(f"candidate {index}", speedup, accepted, figures, payload=path))
        log.info(
            "encoder_search: candidate %d %s: cosine %.4f, neighbours %.3f, %.2fx",
            index,
            figures["config"],
            scores["cosine"],
            scores["neighbours_kept"],
            speedup,
        )
        del model
    selection = select(candidates, objective="speed-up over float PyTorch", maximize=True, constraint=constraint)
    for candidate in candidates:  # float candidates are ~90 MB each; keep the chosen one only
        if candidate is not selection.chosen:
            candidate.payload.unlink(missing_ok=True)
    if selection.chosen is None:
        selection.reason = selection.reason.replace("the baseline ships", "the float PyTorch encoder ships")
        log.warning("encoder_search: %s", selection.reason)
        model, artifact = encoder, None
    else:
        artifact = folder / "encoder.onnx"
        selection.chosen.payload.replace(artifact)
        session = config.candidates[candidates.index(selection.chosen)].session
        model = OnnxSentenceEncoder(artifact, session.threads, spinning=session.spinning)
    for candidate in candidates:
        candidate.payload = None  # the files are gone or moved; the result holds no paths to them
    result = SearchResult(model, selection, artifact)
    atomic_write_text(folder / "search.json", json.dumps(result.summary(), indent=2) + "\n")
    plot_search(candidates, result.chosen, folder / "search_tradeoff.png", config.min_cosine)
    return result


def plot_search(candidates: list[Candidate], chosen: int | None, path: Path, min_cosine: float) -> Path | None:
    """Speed-up against cosine, one point per candidate, the chosen one marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for index, candidate in enumerate(candidates):
        cosine, speedup = candidate.figures["cosine"], candidate.figures["speedup"]
        marker = "*" if index == chosen else ("o" if candidate.accepted else "x")
        axis.scatter(cosine, speedup, marker=marker, s=140 if index == chosen else 50)
        axis.annotate(str(index), (cosine, speedup), textcoords="offset points", xytext=(5, 4))
    axis.axvline(min_cosine, linestyle="--", color="grey", linewidth=1)
    axis.axhline(1.0, linestyle=":", color="grey", linewidth=1)  # the float encoder, which ships when none is chosen
    axis.set_xlabel("mean cosine to float32 embeddings")
    axis.set_ylabel("speed-up over float32 PyTorch")
    shipped = "float32 PyTorch ships: no candidate meets the floors" if chosen is None else "* chosen"
    axis.set_title(f"encoder_search candidates ({shipped}, x below the fidelity floors)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
