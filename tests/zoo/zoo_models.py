"""The zoo: small, randomly initialised models from torchvision, timm, Hugging Face and plain PyTorch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

IMAGE = (2, 3, 32, 32)


def _images(shape: tuple[int, ...] = IMAGE) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _tokens(vocab: int = 100, length: int = 8) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(0))


class TaskTensor(nn.Module):
    """A Hugging Face model returning the tensor its task needs (``logits``), as the huggingface source wraps it."""

    def __init__(self, model: nn.Module, causal: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = "causal_lm" if causal else "sequence_classification"  # as HuggingFaceModel names it

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.task == "causal_lm":  # no KV cache: a cache object is no tensor an exporter or a verb can follow
            return self.model(input_ids=input_ids, use_cache=False).logits
        return self.model(input_ids=input_ids).logits


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x))


class RecurrentClassifier(nn.Module):
    def __init__(self, cell: type[nn.RNNBase] = nn.GRU) -> None:
        super().__init__()
        self.recurrent = cell(12, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.recurrent(x)[0][:, -1])


class AttentionClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 32)
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(x)
        hidden = hidden + self.attention(hidden, hidden, hidden, need_weights=False)[0]
        hidden = hidden + self.feed_forward(hidden)
        return self.head(hidden.mean(1))


class RawParameter(nn.Module):
    """A per-channel gain held as a bare ``nn.Parameter``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(1, 16, 1, 1))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.conv(x) * self.gain).mean((2, 3)))


class DepthwiseResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 1),
            nn.BatchNorm2d(16),
        )
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(x)
        hidden = torch.relu(hidden + self.block(hidden))
        return self.head(hidden.mean((2, 3)))


def _torchvision(name: str, **options) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, name)(weights=None, num_classes=10, **options)

    return build


def _timm(name: str, **options) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=10, **options)

    return build


def _bert_like(family: str, positions: int = 16) -> Callable[[], nn.Module]:
    """A tiny BERT-layout classifier (``Bert`` or ``Roberta``): 2 layers, 4 heads, hidden 32."""

    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, f"{family}Config")(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=positions,
            num_labels=3,
        )
        torch.manual_seed(0)
        return TaskTensor(getattr(transformers, f"{family}ForSequenceClassification")(config))

    return build


def _distilbert() -> nn.Module:
    import transformers

    config = transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=16, num_labels=3
    )
    torch.manual_seed(0)
    return TaskTensor(transformers.DistilBertForSequenceClassification(config))


def _gpt2() -> nn.Module:
    import transformers

    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16)
    torch.manual_seed(0)
    return TaskTensor(transformers.GPT2LMHeadModel(config), causal=True)


def _vit() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    )


# name → (family, builder, example input)
ZOO: dict[str, tuple[str, Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "resnet18": ("torchvision", _torchvision("resnet18"), _images),
    "mobilenet_v3_small": ("torchvision", _torchvision("mobilenet_v3_small"), _images),
    "squeezenet1_0": ("torchvision", _torchvision("squeezenet1_0"), lambda: _images((2, 3, 64, 64))),
    "shufflenet_v2_x0_5": ("torchvision", _torchvision("shufflenet_v2_x0_5"), _images),
    "vit (tiny config)": ("torchvision", _vit, _images),
    "regnet_x_400mf": ("torchvision", _torchvision("regnet_x_400mf"), _images),
    "convnext_tiny": ("torchvision", _torchvision("convnext_tiny"), _images),
    "densenet121": ("torchvision", _torchvision("densenet121"), _images),
    "efficientnet_b0": ("torchvision", _torchvision("efficientnet_b0"), _images),
    "mnasnet0_5": ("torchvision", _torchvision("mnasnet0_5"), _images),
    "timm convnext_atto": ("timm", _timm("convnext_atto"), _images),
    "timm efficientvit_m0": ("timm", _timm("efficientvit_m0", img_size=64), lambda: _images((2, 3, 64, 64))),
    "timm deit_tiny": ("timm", _timm("deit_tiny_patch16_224", img_size=32), _images),
    "timm resnet10t": ("timm", _timm("resnet10t"), _images),
    "timm mobilenetv3_small_050": ("timm", _timm("mobilenetv3_small_050"), _images),
    "bert (tiny)": ("huggingface", _bert_like("Bert"), _tokens),
    "distilbert (tiny)": ("huggingface", _distilbert, _tokens),
    # RoBERTa's positions start after the padding index, so it needs a longer table for the same tokens
    "roberta (tiny)": ("huggingface", _bert_like("Roberta", positions=20), _tokens),
    "gpt2 (tiny)": ("huggingface", _gpt2, _tokens),
    "mlp": ("plain", MLP, lambda: _images((2, 3, 4, 4))),
    "gru classifier": ("plain", RecurrentClassifier, lambda: _images((2, 6, 12))),
    "lstm classifier": ("plain", lambda: RecurrentClassifier(nn.LSTM), lambda: _images((2, 6, 12))),
    "multihead attention": ("plain", AttentionClassifier, lambda: _images((2, 6, 12))),
    "raw parameter": ("plain", RawParameter, _images),
    "depthwise + residual": ("plain", DepthwiseResidual, _images),
}

# one model per family for the fast suite: a CNN, a transformer encoder, an RNN
FAST = ["depthwise + residual", "bert (tiny)", "gru classifier"]
