"""Which layers a technique touches: one pattern syntax, one filter, for every verb.

Layers are named by their ``named_modules()`` paths (``encoder.layer.0.output.dense``).
A **pattern** matches a whole name:

* ``*`` matches within one segment (``encoder.layer.*.output.dense`` — every layer's FFN output);
* ``**`` matches any number of segments, none included (``**.dense``, ``encoder.**``);
* ``?`` matches one character of a segment; anything else matches itself.

A :class:`LayerFilter` chooses among the layers of the types a technique handles
(Linear and Conv by default): ``include`` patterns (empty: all), ``exclude``
patterns, ``types``/``exclude_types`` by class name, ``keep_first``/``keep_last``
for the first and last such layer. A pattern or type name that matches nothing
in the model is an error naming the closest layers, so a typo never silently
changes what is compressed. ``filter.fn(model)`` gives a ``filter_fn(module, name)``
in the style of torchao's ``quantize_``; ``filter.select(model)`` the chosen layers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence

from pydantic import Field
from torch import nn

from optiforge.config import Config
from optiforge.errors import ConfigError, ModelError
from optiforge.registry import closest

# the layer types whose weight matrices the techniques compress and quantize
WEIGHTED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@functools.lru_cache(maxsize=512)
def pattern_regex(pattern: str) -> re.Pattern:
    """The regular expression of a layer pattern (see the module docstring).

    >>> bool(pattern_regex("encoder.layer.*.output.dense").fullmatch("encoder.layer.3.output.dense"))
    True
    >>> bool(pattern_regex("encoder.*.dense").fullmatch("encoder.layer.3.output.dense"))
    False
    >>> bool(pattern_regex("**.dense").fullmatch("encoder.layer.3.output.dense"))
    True
    """
    segments = pattern.split(".")
    pieces = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            if len(segments) == 1:
                pieces.append(".*")
            else:
                pieces.append(r"(?:\.[^.]+)*" if last else r"(?:[^.]+\.)*")
            continue
        pieces.append("".join("[^.]*" if c == "*" else "[^.]" if c == "?" else re.escape(c) for c in segment))
        if not last and not (segments[index + 1] == "**" and index + 1 == len(segments) - 1):
            pieces.append(r"\.")
    return re.compile("".join(pieces))


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches any of ``patterns``.

    >>> matches("features.0", ["features.*"]), matches("features.0.conv", ["features.*"])
    (True, False)
    """
    return any(pattern_regex(pattern).fullmatch(name) for pattern in patterns)


def weighted_layers(model: nn.Module, types: tuple[type[nn.Module], ...] = WEIGHTED_TYPES) -> dict[str, nn.Module]:
    """Name → module of every layer of ``types``, in model order."""
    return {name: module for name, module in model.named_modules() if name and isinstance(module, types)}


def check_patterns(model: nn.Module, patterns: Sequence[str], field: str) -> None:
    """Refuse patterns that match no module of ``model``, naming the closest ones."""
    known = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        if not any(pattern_regex(pattern).fullmatch(name) for name in known):
            raise ConfigError(
                f"{field}: no layer matches '{pattern}'{closest(pattern, known)}; "
                f"layers: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''} "
                "(patterns: '*' is one name segment, '**' any number)"
            )


def _check_types(model: nn.Module, type_names: Sequence[str], field: str) -> None:
    present = sorted({type(module).__name__ for module in model.modules()})
    for type_name in type_names:
        if type_name not in present:
            raise ConfigError(
                f"{field}: the model has no layer of type '{type_name}'{closest(type_name, present)}; "
                f"types: {', '.join(present)}"
            )


class LayerFilter(Config):
    """Which of a technique's layers it touches (patterns: see :mod:`optiforge.layers`)."""

    include: list[str] = Field(default_factory=list, description="patterns of layers to touch (empty: all)")
    exclude: list[str] = Field(default_factory=list, description="patterns of layers to leave alone")
    types: list[str] = Field(default_factory=list, description="only layers of these classes, e.g. Linear")
    exclude_types: list[str] = Field(default_factory=list, description="never layers of these classes")
    keep_first: bool = Field(False, description="leave the first layer of the technique's types alone")
    keep_last: bool = Field(False, description="leave the last layer of the technique's types alone")

    def check(self, model: nn.Module, field: str = "layers") -> None:
        """Refuse patterns and type names that match nothing in ``model``."""
        check_patterns(model, self.include, f"{field}.include")
        check_patterns(model, self.exclude, f"{field}.exclude")
        _check_types(model, self.types, f"{field}.types")
        _check_types(model, self.exclude_types, f"{field}.exclude_types")

    def select(
        self,
        model: nn.Module,
        types: tuple[type[nn.Module], ...] = WEIGHTED_TYPES,
        field: str = "layers",
        require: bool = True,
    ) -> dict[str, nn.Module]:
        """Name → module of the chosen layers of ``types``, in model order.

        With ``require``, a model with no such layer, or a filter that leaves
        none, is a :class:`ModelError` that says which setting removed them.
        """
        self.check(model, field)
        candidates = list(weighted_layers(model, types).items())
        if require and not candidates:
            kinds = ", ".join(t.__name__ for t in types)
            raise ModelError(f"{type(model).__name__} has no layer this technique handles (looked for {kinds})")
        positional = {candidates[0][0]} if self.keep_first and candidates else set()
        if self.keep_last and candidates:
            positional.add(candidates[-1][0])
        chosen = {name: module for name, module in candidates if name not in positional and self._wanted(name, module)}
        if require and not chosen:
            why = []
            if positional:
                why.append(f"{field}.keep_first/keep_last keeps {', '.join(sorted(positional))}")
            if self.include or self.exclude or self.types or self.exclude_types:
                why.append(f"the patterns and types of '{field}' leave out the rest")
            raise ModelError(
                f"no layer of {type(model).__name__} is left to compress: "
                f"{'; '.join(why) or 'the filter leaves none'} (layers: {', '.join(name for name, _ in candidates)})"
            )
        return chosen

    def fn(
        self, model: nn.Module, types: tuple[type[nn.Module], ...] = WEIGHTED_TYPES, field: str = "layers"
    ) -> Callable[[nn.Module, str], bool]:
        """A ``filter_fn(module, name) -> bool`` (torchao's ``quantize_`` convention) for ``model``."""
        chosen = set(self.select(model, types, field, require=False))
        return lambda module, name: name in chosen

    def _wanted(self, name: str, module: nn.Module) -> bool:
        kind = type(module).__name__
        if self.types and kind not in self.types:
            return False
        if kind in self.exclude_types or matches(name, self.exclude):
            return False
        return not self.include or matches(name, self.include)


class QuantizedLayerFilter(LayerFilter):
    """A :class:`LayerFilter` for quantization: ``float_most_sensitive`` more of the chosen layers stay float,
    the ones whose quantization alone costs the most fidelity (measured on the verb's validation data)."""

    float_most_sensitive: int = Field(
        0, ge=0, le=1000, description="keep the k layers most sensitive to quantization in float (0: none)"
    )


def module_of_node(node_name: str) -> str:
    """The module a node of a TorchScript-exported ONNX graph came from.

    The exporter names nodes after the scopes of the modules that ran them; a
    child held by index is written with its container's name
    (``/features/features.2/layers.0/Gemm`` comes from ``features.2.layers.0``).

    >>> module_of_node("/features/features.2/layers.0/Gemm")
    'features.2.layers.0'
    >>> module_of_node("/transformer/encoder/layer.0/output/dense/MatMul")
    'transformer.encoder.layer.0.output.dense'
    """
    parts: list[str] = []
    for segment in node_name.split("/")[1:-1]:
        if parts and segment.startswith(parts[-1] + "."):
            parts[-1] = segment
        else:
            parts.append(segment)
    return ".".join(parts)


def locate_failure(model: nn.Module, forward: Callable[[], object]) -> tuple[str, Exception] | None:
    """``(layer, error)`` when ``forward()``, a forward pass of ``model``, raises, else None.

    The layer is the innermost one still running; ``""`` when the failure is in the model's own forward.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(2, 1))
    >>> layer, error = locate_failure(model, lambda: model(torch.ones(1, 4)))
    >>> layer, type(error).__name__
    ('1', 'RuntimeError')
    """
    running: list[str] = []

    def leave(_module: nn.Module, _inputs: object, _output: object) -> None:
        if running:
            running.pop()  # a forward hook that returned a value would replace the layer's output

    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(lambda _m, _i, name=name: running.append(name)))
            hooks.append(module.register_forward_hook(leave))
    try:
        forward()
    except Exception as error:  # the caller reports the failure; it is never re-raised raw
        return (running[-1] if running else ""), error
    finally:
        for hook in hooks:
            hook.remove()
    return None
