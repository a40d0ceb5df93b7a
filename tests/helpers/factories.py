"""Data and model factories that tests name as "factories:function"."""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset


def blobs(n: int = 256, features: int = 10, classes: int = 3):
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, features, generator=generator) * 3
    labels = torch.arange(n) % classes
    inputs = centers[labels] + torch.randn(n, features, generator=generator)
    return TensorDataset(inputs[: n * 3 // 4], labels[: n * 3 // 4]), TensorDataset(
        inputs[n * 3 // 4 :], labels[n * 3 // 4 :]
    )


class SlowDataset(Dataset):
    """Wraps a dataset and sleeps per item, so an epoch takes a predictable time."""

    def __init__(self, inner: Dataset, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        time.sleep(self.seconds)
        return self.inner[index]


def slow_blobs(seconds_per_item: float = 0.002):
    train, test = blobs(n=512)
    return SlowDataset(train, seconds_per_item), test


def not_a_pair():
    return "nonsense"


def broken():
    raise ValueError("the data server is down")


def tiny_bert(layers=2, hidden=32, heads=4, intermediate=64, vocab=100, dropout=0.1, pooling=True):
    """A randomly initialised BERT small enough for unit tests (needs transformers)."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=16,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config, add_pooling_layer=pooling).eval()


def tiny_model(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), num_classes))


class WorkerOnlyDataset(Dataset):
    """Refuses to be read in the main process: proves the loader used worker processes."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner
        self.strict = False  # set once the data has been inspected

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        if self.strict and torch.utils.data.get_worker_info() is None:
            raise RuntimeError("read in the main process")
        return self.inner[index]


def worker_only_blobs():
    train, test = blobs(n=256)
    return WorkerOnlyDataset(train), test, test
