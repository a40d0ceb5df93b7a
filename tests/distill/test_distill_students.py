"""students.shrink: a smaller model of the same family."""

import pytest
import torch
from torch import nn

import optiforge
from optiforge import ConfigError, ModelConfig, ModelError
from optiforge.distillation import students

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_shrink_mlp_scales_every_hidden_layer_and_keeps_the_family(digits):
    teacher = optiforge.build_model(ModelConfig(name="mlp", hidden=[256, 128], dropout=0.1), digits)
    student = students.shrink(teacher, width=0.25)
    linears = [m for m in student if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 64), (64, 32), (32, 10)]
    assert sum(isinstance(m, nn.Dropout) for m in student) == 2
    assert student(digits.example_input(3)).shape == (3, 10)
    shallow = students.shrink(teacher, width=0.5, depth=1)
    assert [m.out_features for m in shallow if isinstance(m, nn.Linear)] == [128, 10]
    assert students.shrink(teacher).__class__ is nn.Sequential and _params(students.shrink(teacher)) < _params(teacher)


def test_shrink_cnn1d_narrows_channels_and_drops_blocks_with_an_example_input():
    data = optiforge.TaskData(train=None, val=None, test=[(torch.randn(1, 40), 0)], input_shape=(1, 40), num_classes=10)
    teacher = optiforge.models.builtin.cnn1d((1, 40), 10, channels=[64, 128, 128])
    student = students.shrink(teacher, width=0.25)
    convs = [m for m in student if isinstance(m, nn.Conv1d)]
    assert [m.out_channels for m in convs] == [16, 32, 32]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in student) == 3
    example = data.example_input(4)
    assert student(example).shape == (4, 10)
    with pytest.raises(ConfigError, match="example_input"):
        students.shrink(teacher, width=0.5, depth=2)
    shallow = students.shrink(teacher, width=0.5, depth=2, example_input=example)
    assert [m.out_channels for m in shallow if isinstance(m, nn.Conv1d)] == [32, 64]
    assert shallow(example).shape == (4, 10)


def test_shrink_cnn2d_keeps_its_dense_head():
    teacher = optiforge.models.builtin.cnn2d((1, 8, 8), 10, channels=[16, 32], hidden=64)
    student = students.shrink(teacher, width=0.5)
    assert [m.out_channels for m in student if isinstance(m, nn.Conv2d)] == [8, 16]
    assert [m.out_features for m in student if isinstance(m, nn.Linear)] == [32, 10]
    assert student(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_shrink_refuses_what_it_cannot_rebuild():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ModelError, match="no student builder for Custom"):
        students.shrink(Custom())
    with pytest.raises(ConfigError, match="shrink.width"):
        students.shrink(nn.Sequential(nn.Linear(2, 2)), width=1.5)


def _tiny_bert():
    pytest.importorskip("transformers")
    import factories

    return factories.tiny_bert(layers=4, hidden=16, heads=2, intermediate=32, vocab=50, dropout=0.0)


class MeanPooledEncoder(nn.Module):
    """Token ids → mean-pooled embedding, as a sentence encoder returns."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, ids):
        from optiforge.distillation.losses import mean_pool

        mask = torch.ones_like(ids)
        return mean_pool(self.bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def test_shrink_bert_keeps_every_other_layer_with_the_teachers_weights():
    teacher = MeanPooledEncoder(_tiny_bert())
    student = students.shrink(teacher)
    layers = student.bert.encoder.layer
    assert len(layers) == 2 and student.bert.config.num_hidden_layers == 2
    assert len(teacher.bert.encoder.layer) == 4  # the teacher is left whole
    for kept, original in zip(layers, (teacher.bert.encoder.layer[0], teacher.bert.encoder.layer[2]), strict=True):
        for a, b in zip(kept.state_dict().values(), original.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        assert kept is not original
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    ids = torch.randint(0, 50, (3, 7))
    assert student(ids).shape == teacher(ids).shape == (3, 16)
    assert len(students.shrink(teacher, depth=3).bert.encoder.layer) == 3


def test_embedding_distillation_pulls_the_student_embedding_towards_the_teachers():
    from torch.utils.data import TensorDataset

    from optiforge.distillation import DistillConfig, distill
    from optiforge.distillation.losses import cosine_loss

    bert = _tiny_bert()
    with torch.no_grad():  # larger random weights than BERT's init, so embeddings point in different directions
        for parameter in bert.parameters():
            parameter.normal_(0, 0.3)
    teacher = MeanPooledEncoder(bert)
    student = students.shrink(teacher)  # two of four layers, DistilBERT-style
    ids = torch.randint(0, 50, (96, 8))
    labels = torch.zeros(96, dtype=torch.long)
    split = TensorDataset(ids, labels)
    data = optiforge.TaskData(
        train=split, val=TensorDataset(ids[:0], labels[:0]), test=split, input_shape=(8,), num_classes=16
    )
    with torch.no_grad():
        before = cosine_loss(student.eval()(ids), teacher(ids)).item()
    train = optiforge.TrainConfig(optimizer={"name": "adamw", "lr": 0.003}, batch_size=32)
    student = distill(
        teacher,
        student,
        data,
        DistillConfig(loss={"kind": "cosine", "alpha": 1.0}, finetune={"epochs": 10}),
        train=train,
        progress=False,
    )
    with torch.no_grad():
        after = cosine_loss(student.eval()(ids), teacher(ids)).item()
    assert before > 0.3 and after < 0.3 * before


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(x)
        return self.head((hidden + self.block(hidden)).mean((2, 3)))


def test_narrowing_past_its_cpu_budget_is_refused_and_the_teacher_left_whole(monkeypatch):
    from optiforge.distillation import student_cnns

    teacher, images = _Residual(), torch.randn(2, 3, 8, 8)
    monkeypatch.setattr(student_cnns, "NARROW_BUDGET_SECONDS", 0.0)
    with pytest.raises(ModelError, match=r"^shrink: cannot narrow _Residual: .* ran past 0 s of CPU time"):
        students.shrink(teacher, width=0.5, example_input=images)
    assert teacher.block[0].out_channels == 8
    monkeypatch.undo()
    assert students.shrink(teacher, width=0.5, example_input=images).block[0].out_channels == 4
