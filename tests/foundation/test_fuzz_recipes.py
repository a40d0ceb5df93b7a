"""Mutated recipes: ``optiforge validate`` and ``run`` exit 0, or 2 with one error line; never a traceback or a hang.

A seeded mutator starts from the built-in recipes and breaks them the ways users do: wrong types, negative, huge
and non-finite numbers, misspelt and deleted keys, deep nesting, aliases, duplicate keys, random bytes. Every case
runs the CLI in-process. The counts are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import signal
import traceback
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from optiforge.cli import main
from optiforge.data.builtin import DATASETS
from optiforge.recipe import builtin_recipes

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="the hang guard needs signal.alarm")

SECONDS_PER_CASE = 10  # a case that takes longer hangs: validate takes well under a second
# each builds a pretrained network and its reference outputs: too slow to repeat
SLOW_RECIPES = {"minilm", "efficientnet"}
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n" for level in range(8)
)
BAD_VALUES = [
    None,
    True,
    "",
    "abc",
    "no.such.module:thing",
    "line\nbreak",
    "ünïcode ✓",
    "x" * 300,
    [],
    [1, "two", None],
    [-5],
    [10**12],
    {},
    {"nested": {"deeper": [1, 2]}},
    0,
    -1,
    -(10**12),
    -0.5,
    0.5,
    1.5,
    2,
    10**12,
    2**63,
    10**100,
    1e300,
    math.nan,
    math.inf,
    -math.inf,
]


RAW_VALUES = [  # YAML text placed as it is: tags, bad dates and stray syntax the writer would quote
    "2020-13-45",
    "!!int abc",
    "!!float x",
    "!!bool maybe",
    "0x_",
    "!!binary ===",
    "!!python/name:os.getcwd",
    "!!set {a, b}",
    "!!omap [1]",
    "*undefined",
    "&anchor",
    "{",
    "]",
    "'unclosed",
    "? [complex, key]",
    "{[1]: unhashable}",
]


class Hang(BaseException):
    """Raised by the alarm: a case ran past SECONDS_PER_CASE."""


def _alarm(signum, frame):
    raise Hang


def small_mnist1d(channels: bool = True) -> tuple:
    """MNIST-1D's shapes and classes (40-long signals, 10 classes) at a tenth of the size, without generating it."""
    generator = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(500, 1, 40, generator=generator), torch.arange(500) % 10
    if not channels:
        inputs = inputs[:, 0]
    return TensorDataset(inputs[:400], labels[:400]), TensorDataset(inputs[400:], labels[400:])


@pytest.fixture(scope="module", autouse=True)
def fast_datasets():
    """Digits built once per set of options and a small MNIST-1D: the recipe handling under test is unchanged."""
    saved = {name: DATASETS.get(name) for name in ("digits", "mnist1d")}
    cache: dict[str, tuple] = {}

    @functools.wraps(saved["digits"])
    def cached_digits(**options):
        key = repr(sorted(options.items()))
        if key not in cache:
            cache[key] = saved["digits"](**options)
        return cache[key]

    DATASETS.add("digits", cached_digits)
    DATASETS.add("mnist1d", small_mnist1d)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["validate", "quickstart"]) == 0  # imports happen once, before any case is timed
    yield
    for name, builder in saved.items():
        DATASETS.add(name, builder)


def _paths(node, prefix=()):
    """Every (path, value) in a parsed recipe; the path is a tuple of keys and indices."""
    yield prefix, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _parent(data, path):
    for part in path[:-1]:
        data = data[part]
    return data


@functools.cache
def _sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in builtin_recipes().items() if name not in SLOW_RECIPES}


@st.composite
def mutated_recipe(draw) -> bytes:
    """A built-in recipe's YAML with one to three structural mutations and an optional textual one."""
    sources = _sources()
    name = draw(st.sampled_from(sorted(sources)))
    data = yaml.safe_load(sources[name])
    nests: list[int] = []  # deep nesting is written as text: the YAML writer recurses
    raws: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        paths = [path for path, _ in _paths(data) if path]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(data, path), path[-1]
        kind = draw(st.sampled_from(["value", "value", "value", "raw", "misspell", "delete", "nest"]))
        if kind == "value":
            parent[key] = copy.deepcopy(draw(st.sampled_from(BAD_VALUES)))  # later mutations must not reach the pool
        elif kind == "raw":
            raws.append(draw(st.sampled_from(RAW_VALUES)))
            parent[key] = f"RAW{len(raws) - 1}"
        elif kind == "nest":
            nests.append(draw(st.sampled_from([3, 60, 1000])))
            parent[key] = f"NEST{len(nests) - 1}"
        elif kind == "misspell" and isinstance(parent, dict):
            text = str(key)
            at = draw(st.integers(0, len(text)))
            parent[text[:at] + draw(st.sampled_from(["x", "", "_", "é"])) + text[at + 1 :]] = parent.pop(key)
        elif isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6) if data is not None else ""
    for index, depth in enumerate(nests):
        text = text.replace(f"NEST{index}", "[" * depth + "1" + "]" * depth)
    for index, raw_value in enumerate(raws):
        text = text.replace(f"RAW{index}", raw_value)
    textual = draw(st.sampled_from(["none", "none", "duplicate", "alias", "bomb", "bytes", "truncate"]))
    if textual == "duplicate" and text:
        text += text.splitlines()[0] + "\n"
    elif textual == "alias":
        text = "shared: &shared {epochs: 1}\n" + text + "extra: *shared\n"
    elif textual == "bomb":
        text = BILLION_LAUGHS + text
    raw = text.encode()
    if textual == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at:]
    elif textual == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


def call_cli(args: list[str], counts: Counter) -> tuple[int | None, str]:
    """Run the CLI in-process under an alarm; count the outcome; return (exit status or None, stderr)."""
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_CASE)
    counts["tries"] += 1
    try:
        with (
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(record=True),
        ):
            code = main(args)
    except Hang:
        counts["hangs"] += 1
        return None, f"hang: more than {SECONDS_PER_CASE} s"
    except BaseException:
        counts["tracebacks"] += 1
        return None, traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    counts[f"exit {code}"] += 1
    return code, err.getvalue()


def check_outcome(code: int | None, err: str, raw: bytes) -> None:
    shown = raw[:2000].decode(errors="replace")
    assert code is not None, f"{err}\nrecipe:\n{shown}"
    assert code in (0, 2), f"exit {code}: {err}\nrecipe:\n{shown}"
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("optiforge: error: "), f"{err!r}\nrecipe:\n{shown}"


def test_validate_survives_mutated_recipes(tmp_path):
    counts: Counter = Counter()
    recipe = tmp_path / "recipe.yaml"

    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated_recipe())
    def validate(raw: bytes) -> None:
        recipe.write_bytes(raw)
        code, err = call_cli(["validate", str(recipe)], counts)
        check_outcome(code, err, raw)

    try:
        validate()
    finally:
        print(f"\nfuzz validate: {dict(sorted(counts.items()))}")
    assert counts["tracebacks"] == counts["hangs"] == 0
    assert counts["exit 0"] > 0 and counts["exit 2"] > counts["exit 0"]  # the mutator breaks most recipes


TINY_RUN = """\
name: tiny
data: {name: digits}
model: {name: mlp, hidden: [16]}
hardware: {device: cpu, threads: 1}
train:
  optimizer: {name: sgd, lr: 0.1}
  epochs: 1
  batch_size: 256
measure: {latency_repeats: 1, warmup: 0, throughput_batch: 8, throughput_repeats: 1}
"""
RUN_FIELDS = [
    ("model", "hidden"),
    ("model", "dropout"),
    ("train", "epochs"),
    ("train", "batch_size"),
    ("train", "optimizer", "lr"),
    ("train", "optimizer", "name"),
    ("data", "val_fraction"),
    ("measure", "latency_repeats"),
    ("stages",),
]
RUN_VALUES = [None, "abc", -1, 0, 1, 0.5, 2, 10**12, math.nan, math.inf, [], [-3], {"x": 1}]


def _check_run_folder(out: Path, code: int, stage_count: int) -> None:
    """A finished run has a complete report; a failed one has no report and is not marked complete."""
    report = out / "report.json"
    if code == 0:
        assert json.loads((out / "run.json").read_text())["status"] == "complete"
        assert len(json.loads(report.read_text())["stages"]) == 1 + stage_count
    elif out.exists():
        assert not report.exists(), "a failed run left a report"
        if (out / "run.json").exists():
            assert json.loads((out / "run.json").read_text())["status"] != "complete"


def test_run_survives_mutated_tiny_recipes(tmp_path, monkeypatch):
    import optiforge.runner

    for plot in ("plot_training_curves", "plot_tradeoff"):  # drawing is most of a tiny run's time; a plot may be absent
        monkeypatch.setattr(optiforge.runner, plot, lambda *args, **kwargs: None)
    counts: Counter = Counter()

    @settings(
        max_examples=24,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @example(changes=[(("train", "optimizer", "lr"), 10**12)], stages=[])  # the loss becomes NaN mid-run
    @given(
        st.lists(st.tuples(st.sampled_from(RUN_FIELDS), st.sampled_from(RUN_VALUES)), max_size=1),
        st.sampled_from([[], [{"prune": {"sparsity": 0.5}}], [{"prune": {"sparsity": 2}}], [{"nothing": {}}]]),
    )
    def run(changes, stages) -> None:
        data = yaml.safe_load(TINY_RUN)
        data["stages"] = stages
        for path, value in changes:
            _parent(data, path)[path[-1]] = value
        if isinstance(data["train"].get("epochs"), int) and data["train"]["epochs"] > 1:
            data["train"]["epochs"] = 1  # a valid huge epoch count is not a mistake, only slow
        raw = yaml.safe_dump(data).encode()
        recipe, out = tmp_path / "recipe.yaml", tmp_path / f"run{counts['tries']}"
        recipe.write_bytes(raw)
        code, err = call_cli(["run", str(recipe), "--out", str(out), "--no-progress"], counts)
        check_outcome(code, err, raw)
        stages_given = data["stages"] if isinstance(data["stages"], list) else []
        _check_run_folder(out, code, len(stages_given))

    try:
        run()
    finally:
        print(f"\nfuzz run: {dict(sorted(counts.items()))}")
    assert counts["tracebacks"] == counts["hangs"] == 0
    assert counts["exit 0"] > 0 and counts["exit 2"] > 0
