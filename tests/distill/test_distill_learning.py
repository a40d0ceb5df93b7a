"""The student really learns from the teacher, through the one training loop."""

import pytest
import torch
from torch import nn

import optiforge
from optiforge import ModelConfig, TrainConfig
from optiforge.distillation import DistillConfig, HintConfig, distill, prepare
from optiforge.distillation.agreement import top1_agreement
from optiforge.training.loop import train

FAST = TrainConfig(optimizer={"name": "adamw", "lr": 0.01}, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_thread")


class ShiftedClasses(nn.Module):
    """A teacher that predicts class (y + 1) mod 10 where its base model predicts y."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.base(inputs).roll(1, dims=1)


@pytest.fixture(scope="module")
def trained_teacher(digits):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped fixtures run before the per-test one_thread
    torch.manual_seed(0)
    teacher = optiforge.build_model(ModelConfig(name="mlp", hidden=[64]), digits)
    optiforge.train(teacher, digits, FAST.model_copy(update={"epochs": 8}), progress=False)
    torch.set_num_threads(threads)
    return teacher


def _student(digits, seed=1):
    torch.manual_seed(seed)
    return optiforge.build_model(ModelConfig(name="mlp", hidden=[16]), digits)


def test_student_follows_the_teacher_not_the_labels(digits, trained_teacher):
    # the teacher's answers disagree with every label, so only a student that learns
    # from the teacher can agree with it; the same student trained alone cannot
    teacher = ShiftedClasses(trained_teacher)
    alone = _student(digits)
    optiforge.train(alone, digits, FAST.model_copy(update={"epochs": 6}), progress=False)
    distilled = distill(
        teacher,
        _student(digits),
        digits,
        DistillConfig(finetune={"epochs": 6}, loss={"alpha": 1.0, "temperature": 1.0}, mixing={"kind": "none"}),
        train=FAST,
        progress=False,
    )
    assert top1_agreement(alone, teacher, digits.test) < 0.2
    assert top1_agreement(distilled, teacher, digits.test) > 0.8


def test_teacher_sees_exactly_the_students_mixed_inputs_in_eval_mode_without_gradients(digits, trained_teacher):
    student = _student(digits)
    seen = {"student": [], "teacher": [], "teacher_state": []}
    student.register_forward_pre_hook(
        lambda module, args: seen["student"].append(args[0].clone()) if module.training else None
    )

    def on_teacher(module, args):
        seen["teacher"].append(args[0].clone())
        seen["teacher_state"].append((module.training, torch.is_grad_enabled()))

    handle = trained_teacher.register_forward_pre_hook(on_teacher)
    try:
        distill(
            trained_teacher,
            student,
            digits,
            DistillConfig(finetune={"epochs": 1}, mixing={"kind": "mixup"}),
            train=FAST,
            progress=False,
        )
    finally:
        handle.remove()
    teacher_inputs = seen["teacher"][1:]  # the first call is the 2-example shape probe
    assert len(teacher_inputs) == len(seen["student"]) > 10
    assert all(torch.equal(s, t) for s, t in zip(seen["student"], teacher_inputs, strict=True))
    assert set(seen["teacher_state"]) == {(False, False)}
    raw = torch.stack([digits.train[i][0] for i in range(len(digits.train))])
    first = seen["student"][0]
    nearest = torch.cdist(first.flatten(1), raw.flatten(1)).min(dim=1).values
    assert (nearest > 1e-3).float().mean() > 0.5  # the inputs really were mixed
    assert trained_teacher.training  # the teacher's own mode is given back


def test_alpha_weighs_task_loss_against_the_distillation_term(digits, trained_teacher):
    from optiforge.distillation.losses import soft_target_loss

    inputs, targets = next(iter(torch.utils.data.DataLoader(digits.train, batch_size=32)))
    outputs = torch.randn(32, 10)
    task_loss = torch.nn.functional.cross_entropy(outputs, targets)
    with torch.no_grad():
        kd = soft_target_loss(outputs, trained_teacher.eval()(inputs), 3.0)
    for alpha, expected in ((0.0, task_loss), (1.0, kd), (0.25, 0.75 * task_loss + 0.25 * kd)):
        _, callback = prepare(
            trained_teacher, _student(digits), digits, DistillConfig(loss={"alpha": alpha, "temperature": 3.0})
        )
        loss = callback.compute_loss(None, inputs, targets, outputs, task_loss)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_hint_adapter_is_trained_and_dropped_and_hint_loss_falls(digits, trained_teacher):
    student = _student(digits)
    config = DistillConfig(
        finetune={"epochs": 4}, mixing={"kind": "none"}, hints=[HintConfig(student="2", teacher="2", weight=1.0)]
    )
    wrapped, callback = prepare(trained_teacher, student, digits, config)
    adapter = wrapped.adapters[0]
    assert adapter.linear.in_features == 16 and adapter.linear.out_features == 64
    before = adapter.linear.weight.detach().clone()
    result = train(wrapped, digits, FAST.model_copy(update={"epochs": 4}), callbacks=[callback], progress=False)
    history = result.history
    assert history[-1]["train_hint_loss_0"] < 0.7 * history[0]["train_hint_loss_0"]
    assert not torch.equal(before, adapter.linear.weight)
    assert result.model.student is student and len(student) == 4  # Flatten, Linear, ReLU, Linear: nothing added
    assert not student._forward_hooks and not student[2]._forward_hooks  # hooks removed after training


def test_cached_teacher_outputs_replace_teacher_calls_and_match_them(digits, trained_teacher):
    calls = []
    handle = trained_teacher.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        distill(
            trained_teacher,
            _student(digits),
            digits,
            DistillConfig(finetune={"epochs": 2}, cache_teacher=True, mixing={"kind": "none"}),
            train=FAST,
            progress=False,
        )
    finally:
        handle.remove()
    # the probe (2 examples) and the cache pass over the training set (batches of 512), nothing per step
    assert sum(calls) == 2 + len(digits.train)

    from optiforge.distillation.cache import TeacherCache

    cache = TeacherCache(trained_teacher.eval(), digits.train, torch.device("cpu"))
    batch = torch.stack([digits.train[i][0] for i in (5, 3, 900, 17)])
    with torch.no_grad():
        assert torch.allclose(cache.lookup(batch), trained_teacher(batch), atol=1e-5)
    assert cache.lookup(batch + 0.01) is None  # an unseen input falls back to running the teacher


def test_resumed_distillation_returns_the_finished_weights(digits, trained_teacher, tmp_path):
    config = DistillConfig(
        finetune={"epochs": 2}, mixing={"kind": "cutmix"}, hints=[HintConfig(student="1", teacher="1")]
    )
    first = distill(
        trained_teacher, _student(digits), digits, config, train=FAST, progress=False, checkpoint_dir=tmp_path
    )
    again = distill(
        trained_teacher,
        _student(digits, seed=5),
        digits,
        config,
        train=FAST,
        progress=False,
        checkpoint_dir=tmp_path,
        resume=True,
    )
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_teacher_sources_module_spec_with_checkpoint_callable_and_torchscript(digits, trained_teacher, tmp_path):
    from optiforge.distillation import resolve_teacher

    weights = tmp_path / "teacher.pt"
    torch.save(trained_teacher.state_dict(), weights)
    scripted = tmp_path / "teacher.ts"
    torch.jit.script(trained_teacher).save(str(scripted))
    example = digits.example_input(4)
    expected = trained_teacher.eval()(example)
    sources = [
        trained_teacher,
        ModelConfig(name="mlp", hidden=[64], checkpoint=str(weights)),
        {"name": "mlp", "hidden": [64], "checkpoint": str(weights)},
        lambda: trained_teacher,
        str(scripted),
    ]
    for source in sources:
        teacher = resolve_teacher(source, digits, trusted=True).eval()  # the TorchScript file was made here
        with torch.no_grad():
            assert torch.allclose(teacher(example), expected, atol=1e-6)


def test_distillation_runs_under_bf16_autocast(digits, trained_teacher):
    student = distill(
        trained_teacher,
        _student(digits),
        digits,
        DistillConfig(finetune={"epochs": 1}),
        train=FAST,
        hardware=optiforge.HardwareConfig(precision="bf16", device="cpu"),
        progress=False,
    )
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert student[1].weight.dtype == torch.float32


def test_teacher_from_a_factory_path_is_built_for_the_data(digits):
    from optiforge.distillation import resolve_teacher

    teacher = resolve_teacher("factories:tiny_model", digits)  # tests/helpers/factories.py
    assert teacher(digits.example_input(3)).shape == (3, 10)
    with pytest.raises(optiforge.ConfigError, match="teacher: no file 'nowhere.pt'"):
        resolve_teacher("nowhere.pt", digits)
