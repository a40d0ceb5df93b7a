"""The causal language-model task: next-token loss and metrics, chosen by a model that declares it."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import optiforge
from optiforge.distillation.losses import soft_target_loss
from optiforge.errors import DataError
from optiforge.tasks import CausalLanguageModeling, Classification, task_for


class NextToken(nn.Module):
    """Predicts token (t + 1) mod vocabulary at every position t, with a learnable confidence."""

    task = "causal_lm"

    def __init__(self, vocabulary: int = 7) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.confidence = nn.Parameter(torch.tensor(5.0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot((ids + 1) % self.vocabulary, self.vocabulary).float() * self.confidence  # (B, T, V)


def test_the_loss_scores_each_position_against_the_next_token():
    torch.manual_seed(0)
    logits, tokens = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))
    assert torch.allclose(CausalLanguageModeling().loss(logits, tokens), expected)
    tokens[:, 2] = -100  # padding is not predicted
    sums = CausalLanguageModeling().batch_sums(logits, tokens)
    assert sums["count"] == 3 * 3


def test_a_model_predicting_every_next_token_has_full_accuracy_and_low_perplexity():
    ids = torch.arange(12).reshape(2, 6) % 7  # each token is the previous one plus 1
    task = CausalLanguageModeling()
    metrics = task.finalize(task.batch_sums(NextToken()(ids), ids))
    assert metrics["token_accuracy"] == 1.0
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"])) and metrics["perplexity"] < 1.1
    shuffled = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(1))
    assert task.finalize(task.batch_sums(NextToken()(ids), shuffled))["token_accuracy"] < 1.0


def test_class_labels_are_refused_with_both_shapes():
    with pytest.raises(DataError, match=r"token ids \(batch, positions\).*\(2, 4, 7\).*\(2,\)"):
        CausalLanguageModeling().loss(torch.zeros(2, 4, 7), torch.zeros(2, dtype=torch.long))


def test_a_model_declaring_causal_lm_chooses_its_task_over_the_datas():
    assert isinstance(task_for("classification", NextToken()), CausalLanguageModeling)
    assert isinstance(task_for("classification", nn.Linear(2, 2)), Classification)


def test_measure_and_train_use_the_task_a_causal_model_declares():
    ids = torch.arange(48).reshape(8, 6) % 7
    split = TensorDataset(ids, ids)
    data = optiforge.TaskData(split, split, split, (6,), 7)  # the data's task is the default, classification
    model = NextToken()
    with torch.no_grad():
        model.confidence.fill_(0.1)
    measured = optiforge.measure(model, data, config=optiforge.MeasureConfig(latency_repeats=1, warmup=0))
    assert measured.metric == "token_accuracy" and measured.value == 1.0
    before = measured.metrics["perplexity"]
    config = optiforge.TrainConfig(epochs=3, batch_size=4, optimizer={"name": "sgd", "lr": 1.0})
    optiforge.train(model, data, config, progress=False)
    after = optiforge.measure(model, data, config=optiforge.MeasureConfig(latency_repeats=1, warmup=0))
    assert after.metrics["perplexity"] < before


def test_soft_targets_of_a_language_model_average_the_kl_over_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    per_position = [soft_target_loss(student[:, t], teacher[:, t], 2.0) for t in range(3)]
    assert torch.allclose(soft_target_loss(student, teacher, 2.0), torch.stack(per_position).mean())
