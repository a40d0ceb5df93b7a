"""The ``share`` verb: weight clustering with k-means, as in Deep Compression.

Han et al. (2016), https://arxiv.org/abs/1510.00149: each layer's weights
are replaced by the nearest of k shared values (centroids), initialised
linearly between the smallest and largest weight; during fine-tuning the
gradient of a centroid is the sum of the gradients of its weights, so the
weights stay shared. Zeros left by pruning are not clustered and stay zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from optiforge.compress.checks import check_result, example_for, rollback_on_failure
from optiforge.compress.common import ShareResult, chosen_layers, skipped_layers, trainer, weight_sparsity
from optiforge.compress.config import ShareConfig
from optiforge.compress.weights import choose_weights
from optiforge.config import TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.training.callbacks import Callback, TrainState
from optiforge.training.finetune import Finetune


def _initial_centroids(values: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":  # equal-probability quantiles of the weight distribution
        return np.quantile(values, np.linspace(0.0, 1.0, k))
    generator = np.random.default_rng(seed)
    return generator.choice(values, size=k, replace=False)


def cluster_tensor(tensor: torch.Tensor, k: int, init: str = "linear", seed: int = 0) -> torch.Tensor:
    """Cluster indices of ``tensor`` (−1 where it is zero); the tensor is set to its centroids in place."""
    from sklearn.cluster import KMeans

    flat = tensor.detach().view(-1)
    nonzero = flat != 0
    indices = torch.full(flat.shape, -1, dtype=torch.long, device=flat.device)
    values = flat[nonzero].double().cpu().numpy()
    if values.size == 0:
        return indices.view(tensor.shape)
    distinct = np.unique(values)
    if distinct.size <= k:  # already shared: keep the values as they are
        centroids, labels = distinct, np.searchsorted(distinct, values)
    else:
        start = _initial_centroids(values, k, init, seed).reshape(-1, 1)
        kmeans = KMeans(n_clusters=k, init=start, n_init=1, max_iter=300, random_state=seed)
        labels = kmeans.fit_predict(values.reshape(-1, 1))
        centroids = kmeans.cluster_centers_.reshape(-1)
    indices[nonzero] = torch.as_tensor(labels, dtype=torch.long, device=flat.device)
    shared = torch.as_tensor(centroids, dtype=flat.dtype, device=flat.device)[indices[nonzero]]
    with torch.no_grad():
        flat[nonzero] = shared
    return indices.view(tensor.shape)


class ShareCallback(Callback):
    """Trains the shared values: per-centroid summed gradients, weights re-tied after each step."""

    def __init__(self, tensors: dict[str, nn.Parameter], indices: dict[str, torch.Tensor], clusters: int) -> None:
        self.tensors = tensors
        self.indices = indices
        self.clusters = clusters

    def before_optimizer_step(self, state: TrainState) -> None:
        for name, tensor in self.tensors.items():
            if tensor.grad is None:
                continue
            index = self.indices[name].to(tensor.device)
            member = index >= 0
            sums = torch.zeros(self.clusters, dtype=tensor.grad.dtype, device=tensor.device)
            sums.scatter_add_(0, index[member], tensor.grad[member])
            # every weight of a cluster gets the cluster's gradient, pruned weights none
            tensor.grad.copy_(torch.where(member, sums[index.clamp(min=0)], torch.zeros_like(tensor.grad)))

    @torch.no_grad()
    def after_optimizer_step(self, state: TrainState) -> None:
        self.tie()

    def on_train_end(self, state: TrainState) -> None:
        self.tie()

    @torch.no_grad()
    def tie(self) -> None:
        """Set every weight to its cluster's mean, so each cluster holds exactly one value."""
        for name, tensor in self.tensors.items():
            index = self.indices[name].to(tensor.device)
            member = index >= 0
            sums = torch.zeros(self.clusters, dtype=tensor.dtype, device=tensor.device)
            counts = torch.zeros(self.clusters, dtype=tensor.dtype, device=tensor.device)
            sums.scatter_add_(0, index[member], tensor[member])
            counts.scatter_add_(0, index[member], torch.ones_like(tensor[member]))
            centroids = sums / counts.clamp(min=1)
            tensor.copy_(torch.where(member, centroids[index.clamp(min=0)], torch.zeros_like(tensor)))

    def state_dict(self) -> dict:
        return {"indices": {name: index.cpu() for name, index in self.indices.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.indices = dict(state["indices"])


def share_with_result(
    model: nn.Module,
    config: ShareConfig | None = None,
    data: TaskData | None = None,
    *,
    train_config: TrainConfig | None = None,
    finetune: Finetune | None = None,
    example_inputs: Any = None,
) -> ShareResult:
    """Cluster each chosen weight tensor (in place); return the model with what was done (see :func:`share`).

    The tensors are those of :mod:`optiforge.compress.weights` (tied ones once). The result is run on
    ``example_inputs`` (else two of ``data``'s test inputs) and refused with a :class:`ModelError` if it fails.
    """
    config = config or ShareConfig()
    example = example_for(example_inputs, data)
    with rollback_on_failure(model, enabled=example is not None):
        train = trainer(data, train_config, finetune, config.finetune, "share")
        chosen = choose_weights(model, config.layers)
        if not chosen.tensors:
            chosen_layers(model, config.layers, "share")  # raises, naming what left nothing
        tensors: dict[str, nn.Parameter] = dict(chosen.tensors)
        if config.include_bias:
            for name in chosen.layers:
                bias = getattr(model.get_submodule(name), "bias", None)
                if isinstance(bias, nn.Parameter):
                    tensors[f"{name}.bias"] = bias
        indices = {
            name: cluster_tensor(tensor, config.clusters, config.init, config.seed) for name, tensor in tensors.items()
        }
        callback = ShareCallback(tensors, indices, config.clusters)
        model = train(model, [callback])
        callback.tie()
        check_result(model, example, "share")
    reasons = {name: why for name, why in chosen.skipped.items() if why != "left out by the layers filter"}
    return ShareResult(
        model,
        "share",
        config,
        chosen.layers,
        skipped_layers(model, chosen.layers, reasons),
        weight_sparsity(model),
        train.history,
        reasons=reasons,
    )


def share(
    model: nn.Module,
    config: ShareConfig | None = None,
    data: TaskData | None = None,
    *,
    train_config: TrainConfig | None = None,
    finetune: Finetune | None = None,
    example_inputs: Any = None,
) -> nn.Module:
    """Cluster each layer's weights into ``config.clusters`` shared values (in place).

    With ``finetune.epochs`` the shared values are trained by ``finetune``, or
    else on ``data`` with ``train_config``.

    >>> import torch
    >>> from optiforge.compress import ShareConfig, share
    >>> model = share(torch.nn.Sequential(torch.nn.Linear(32, 16)), ShareConfig(clusters=4))
    >>> torch.unique(model[0].weight).numel()
    4
    """
    return share_with_result(
        model, config, data, train_config=train_config, finetune=finetune, example_inputs=example_inputs
    ).model
