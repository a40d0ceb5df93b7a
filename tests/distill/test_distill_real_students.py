"""shrink() on real architectures (torchvision, transformers) and distillation from ModelOutputs."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import optiforge
from optiforge import ModelError
from optiforge.distillation import students

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _equal_state(a: nn.Module, b: nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _rows_of(student_weight: torch.Tensor, teacher_weight: torch.Tensor) -> list[int]:
    """For each student row, the index of the equal teacher row (fails if one has none)."""
    rows = [next(i for i, row in enumerate(teacher_weight) if torch.equal(row, kept)) for kept in student_weight]
    assert rows == sorted(set(rows))
    return rows


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.norm(self.conv(x)))


def _small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(Residual(8), Residual(8), Residual(8), Residual(8)),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)),  # keeps the shape, but is no residual
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def test_shrink_leaves_out_residual_blocks_only_and_copies_the_rest():
    teacher = _small_cnn()
    images = torch.randn(2, 3, 16, 16)
    student = students.shrink(teacher, width=1.0, depth=0.5, example_input=images)
    assert list(student[2]._modules) == ["0", "2"]  # evenly spaced from the first
    assert _equal_state(student[2][0], teacher[2][0]) and _equal_state(student[2][1], teacher[2][2])
    assert _equal_state(student[3], teacher[3])  # the plain conv + norm stays
    assert student(images).shape == (2, 4) and _params(student) < _params(teacher)
    assert len(teacher[2]) == 4  # the teacher is left whole
    assert list(students.shrink(teacher, width=1.0, depth=3, example_input=images)[2]._modules) == ["0", "1", "2"]
    teacher.train()
    teacher[3][1].eval()  # a frozen norm
    student = students.shrink(teacher, width=0.5, example_input=images)
    assert student.training and not student[3][1].training and teacher.training and not teacher[3][1].training


def test_a_network_without_residual_blocks_is_refused_depth_but_narrowed():
    teacher = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()), nn.Flatten(1)
    )
    with pytest.raises(ModelError, match="shrink.depth: Sequential has no residual block"):
        students.shrink(teacher, depth=0.5, example_input=torch.randn(1, 3, 4, 4))
    narrow = students.shrink(nn.Sequential(*teacher[:2], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)))
    assert narrow[0].out_channels == 4 and narrow(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_shrink_resnet18_drops_blocks_and_narrows_channels_from_the_teacher():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32)
    student = students.shrink(teacher, width=0.5, depth=0.5, example_input=images)
    assert [len(getattr(student, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert student.conv1.out_channels == 32 and student.fc.in_features == 256 and student.fc.out_features == 10
    assert student(images).shape == teacher(images).shape == (2, 10)
    assert _params(student) < _params(teacher) / 4
    assert len(_rows_of(student.conv1.weight, teacher.conv1.weight)) == 32  # kept filters are the teacher's
    deep = students.shrink(teacher, width=1.0, depth=0.5, example_input=images)
    assert _equal_state(deep.layer3[0], teacher.layer3[0]) and _equal_state(deep.fc, teacher.fc)
    with pytest.raises(ModelError, match="no student builder for GRU"):
        students.shrink(nn.GRU(4, 4))


def test_shrink_a_vision_transformer_leaves_out_encoder_blocks_and_narrows_its_mlps():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    teacher = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=4, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    student = students.shrink(teacher, width=0.5, depth=0.5, example_input=images)
    assert len(student.encoder.layers) == 2 and student.encoder.layers[0].mlp[0].out_features == 32
    assert student(images).shape == (2, 10) and _params(student) < _params(teacher) / 2


def _bert(layers=4):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


def _gpt2(layers=4):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=50, n_embd=32, n_layer=layers, n_head=4, n_positions=16, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def _distilbert(layers=4):
    transformers = pytest.importorskip("transformers")
    config = transformers.DistilBertConfig(
        vocab_size=50, dim=32, n_layers=layers, n_heads=4, hidden_dim=64, max_position_embeddings=16, num_labels=3
    )
    torch.manual_seed(0)
    return transformers.DistilBertForSequenceClassification(config).eval()


def _roberta(layers=4):
    transformers = pytest.importorskip("transformers")
    config = transformers.RobertaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=20,
        num_labels=3,
    )
    torch.manual_seed(0)
    return transformers.RobertaForSequenceClassification(config).eval()


@pytest.mark.parametrize(
    "build, layers",
    [
        (_bert, "bert.encoder.layer"),
        (_roberta, "roberta.encoder.layer"),
        (_distilbert, "distilbert.transformer.layer"),
        (_gpt2, "transformer.h"),
    ],
)
def test_shrink_transformers_copies_every_other_layer_and_narrows_the_feed_forward(build, layers):
    teacher = build()
    ids = torch.randint(1, 50, (2, 8))
    student = students.shrink(teacher)
    assert len(student.get_submodule(layers)) == 2 and student.config.num_hidden_layers == 2
    for kept, original in zip(
        student.get_submodule(layers), [teacher.get_submodule(layers)[i] for i in (0, 2)], strict=True
    ):
        assert _equal_state(kept, original) and kept is not original
    narrow = students.shrink(teacher, width=0.5)
    assert narrow(ids).logits.shape == teacher(ids).logits.shape
    assert _params(narrow) < _params(student) < _params(teacher)
    assert len(teacher.get_submodule(layers)) == 4  # the teacher is left whole


def test_narrow_bert_and_gpt2_keep_whole_heads_and_neurons_with_their_weights():
    bert = _bert(layers=2)
    student = students.shrink(bert, width=0.5, depth=1.0)
    attention = student.bert.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.attention_head_size) == (2, 8)  # the head size stays
    config = student.config
    assert (config.num_attention_heads, config.hidden_size, config.intermediate_size) == (2, 16, 32)
    embeddings = student.bert.embeddings.word_embeddings.weight
    channels = _rows_of(embeddings.t(), bert.bert.embeddings.word_embeddings.weight.t())  # kept residual channels
    for big, small in zip(bert.bert.encoder.layer, student.bert.encoder.layer, strict=True):
        # each kept neuron is the teacher's, read from the kept channels
        assert len(_rows_of(small.intermediate.dense.weight, big.intermediate.dense.weight[:, channels])) == 32
        assert torch.equal(small.output.LayerNorm.weight, big.output.LayerNorm.weight[channels])
    gpt2 = _gpt2(layers=2)
    student = students.shrink(gpt2, width=0.5, depth=1.0)
    assert student.transformer.h[1].attn.num_heads == 2 and student.config.n_inner == 64
    assert student.config.n_embd == student.transformer.h[1].attn.split_size == 16
    assert student.lm_head.weight is student.transformer.wte.weight  # still tied
    ids = torch.randint(1, 50, (2, 8))
    assert student(ids).logits.shape == gpt2(ids).logits.shape


@pytest.mark.parametrize("build", [_bert, _distilbert, _gpt2])
def test_a_narrow_student_saves_and_reloads_with_from_pretrained(build, tmp_path):
    teacher = build()
    student = students.shrink(teacher, width=0.5).eval()
    student.save_pretrained(tmp_path)
    reloaded = type(teacher).from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 50, (2, 8))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, student(ids).logits)
    assert _params(reloaded) == _params(student) < _params(teacher) / 2


def test_a_wrapped_model_keeps_its_wrapper():
    from optiforge.models.huggingface import HuggingFaceModel

    teacher = HuggingFaceModel(_bert(), "sequence_classification", pad_token_id=0)
    student = students.shrink(teacher, width=0.5)
    ids = torch.randint(1, 50, (2, 8))
    assert isinstance(student, HuggingFaceModel) and student.task == "sequence_classification"
    assert len(student.model.bert.encoder.layer) == 2 and student(ids).shape == teacher(ids).shape == (2, 3)


def test_distill_reads_logits_from_model_outputs_and_hints_from_hidden_layers():
    from optiforge.distillation import DistillConfig, distill
    from optiforge.distillation.losses import soft_target_loss

    teacher = _bert()
    with torch.no_grad():  # larger random weights than BERT's init, so the teacher has something to teach
        for parameter in teacher.parameters():
            parameter.normal_(0, 0.3)
    student = students.shrink(teacher, width=0.5)
    ids = torch.randint(1, 50, (64, 8))
    labels = teacher(ids).logits.argmax(dim=1)
    split = TensorDataset(ids, labels)
    data = optiforge.TaskData(train=split, val=split, test=split, input_shape=(8,), num_classes=3)
    with torch.no_grad():
        before = soft_target_loss(student.eval()(ids).logits, teacher(ids).logits, 2.0).item()
    config = DistillConfig(
        loss={"alpha": 1.0},
        finetune={"epochs": 6},
        mixing={"kind": "none"},
        hints=[{"student": "bert.encoder.layer.1", "teacher": "bert.encoder.layer.3", "weight": 0.1}],
    )
    train = optiforge.TrainConfig(optimizer={"name": "adamw", "lr": 0.003}, batch_size=32)
    trained = distill(teacher, student, data, config, train=train, progress=False)
    with torch.no_grad():
        after = soft_target_loss(trained.eval()(ids).logits, teacher(ids).logits, 2.0).item()
    assert type(trained(ids)).__name__ == "SequenceClassifierOutput"  # the student is given back as it was
    assert after < 0.7 * before


def test_distill_refuses_an_output_without_a_tensor():
    from optiforge.distillation import DistillConfig, prepare

    class Talker(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            return {"text": "no tensor here"}

    split = TensorDataset(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))
    data = optiforge.TaskData(train=split, val=split, test=split, input_shape=(4,), num_classes=2)
    with pytest.raises(ModelError, match="student: it returns dict, which holds no logits"):
        prepare(nn.Linear(4, 2), Talker(), data, DistillConfig())
