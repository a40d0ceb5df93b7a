"""Optimizers by name from ``torch.optim``.

``gd`` is full-batch gradient descent (SGD over the whole training set in one
batch), ``sgd`` mini-batch SGD with optional momentum/Nesterov, and any class
of ``torch.optim`` can be named in lower or original case. ``muon`` follows
the Muon authors' recipe: Muon (:mod:`optiforge.training.muon`) for the weights
of hidden linear layers and of convolutions after the first, AdamW for
everything else (biases, norms, embeddings, the first convolution, which sees
the raw input through a few channels, and the output layer), one rate for
both; ``options: {newton_schulz_steps: 3}`` makes Muon's step cheaper.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from optiforge.config import OptimizerConfig
from optiforge.errors import ConfigError
from optiforge.registry import closest
from optiforge.training.muon import Muon

_ALIASES = {"gd": "SGD", "sgd": "SGD"}
PLACEHOLDER_LR = 1e-3
MUON_OPTIONS = {"newton_schulz_steps"}


def optimizer_names() -> list[str]:
    names = {"gd", "sgd", "muon"}
    for name, value in vars(torch.optim).items():
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) and value is not torch.optim.Optimizer:
            names.add(name.lower())
    return sorted(names)


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    wanted = _ALIASES.get(name, name).lower()
    for attribute, value in vars(torch.optim).items():
        if attribute.lower() == wanted and isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            return value
    raise ConfigError(
        f"train.optimizer.name: unknown optimizer '{name}'{closest(name, optimizer_names())}; "
        f"allowed: {', '.join(optimizer_names())}"
    )


def _check_options(owner: str, options: dict[str, Any], allowed: list[str]) -> None:
    """Refuse the first of ``options`` that ``owner`` does not take, naming the closest it does."""
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"train.optimizer.options.{key}: {owner} has no such option{closest(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )


def _keyword_arguments(cls: type, config: OptimizerConfig) -> dict[str, Any]:
    accepted = inspect.signature(cls.__init__).parameters
    candidates: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.momentum:
        candidates["momentum"] = config.momentum
    if config.nesterov:
        candidates["nesterov"] = True
    if config.betas is not None:
        candidates["betas"] = config.betas
    kwargs = {key: value for key, value in candidates.items() if key in accepted}
    for key in ("momentum", "nesterov", "betas"):
        if key in candidates and key not in accepted:
            raise ConfigError(f"train.optimizer.{key}: {cls.__name__} has no '{key}' option")
    _check_options(cls.__name__, config.options, [name for name in accepted if name not in ("self", "params")])
    kwargs.update(config.options)
    if config.nesterov and cls is torch.optim.SGD and not config.momentum:
        raise ConfigError("train.optimizer.nesterov: Nesterov momentum needs momentum > 0")
    return kwargs


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on hidden weight matrices and convolution filters, AdamW on the rest, stepped together.

    Its ``param_groups`` are the inner optimizers' groups, so LR schedulers
    drive both.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer | None) -> None:
        self.inner = [opt for opt in (muon, adamw) if opt is not None]
        self.defaults = dict(muon.defaults)
        self.param_groups = [group for opt in self.inner for group in opt.param_groups]
        self.state = {}  # the inner optimizers hold the real state
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for opt in self.inner:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": [opt.state_dict() for opt in self.inner]}

    def load_state_dict(self, state_dict: dict) -> None:
        for opt, state in zip(self.inner, state_dict["inner"], strict=True):
            opt.load_state_dict(state)


def _muon_weights(model: nn.Module) -> set[int]:
    """The ids of the weights Muon steps: hidden nn.Linear matrices and every convolution's filters but the first's."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    convolutions = [m for m in layers if not isinstance(m, nn.Linear)]
    excluded = {id(layers[-1])} if layers else set()
    if convolutions:
        excluded.add(id(convolutions[0]))
    return {
        id(m.weight)
        for m in layers
        if id(m) not in excluded and m.weight.requires_grad and (m.weight.dim() == 2 or not isinstance(m, nn.Linear))
    }


def _muon(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    weights = _muon_weights(model)
    if not weights:
        raise ConfigError(
            "train.optimizer.name: 'muon' needs a hidden nn.Linear weight matrix or a convolution after the first; "
            f"{type(model).__name__} has neither (use adamw)"
        )
    matrices = [p for p in model.parameters() if id(p) in weights]
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in weights]
    options = dict(config.options)
    _check_options("muon", options, sorted(MUON_OPTIONS))
    try:
        muon = Muon(
            matrices, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum or 0.95, **options
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"train.optimizer: Muon refused the options: {error}") from None
    adamw = torch.optim.AdamW(others, lr=config.lr, weight_decay=config.weight_decay) if others else None
    return MuonWithAdamW(muon, adamw)


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """An optimizer over the model's trainable parameters."""
    if config.lr == "auto":
        # only a check of the options builds one before the range test has chosen (train() chooses first)
        config = config.model_copy(update={"lr": PLACEHOLDER_LR})
    if config.name.lower() == "muon":
        return _muon(model, config)
    cls = optimizer_class(config.name)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ConfigError("train: the model has no trainable parameters")
    try:
        return cls(parameters, **_keyword_arguments(cls, config))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"train.optimizer: {cls.__name__} refused the options: {error}") from None


def is_full_batch(config: OptimizerConfig) -> bool:
    return config.name == "gd"
