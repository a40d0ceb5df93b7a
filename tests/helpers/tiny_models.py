"""Tiny models written by other tools than PyTorch: ONNX graphs from onnx.helper, Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _initializer(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array.astype(np.float32), name)


def onnx_mlp(path: Path, features: int = 64, hidden: int = 16, classes: int = 10, seed: int = 0) -> Path:
    """Gemm → Relu → Gemm with a dynamic batch, written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], transB=1, name="fc1"),
            helper.make_node("Relu", ["h"], ["a"], name="relu"),
            helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], transB=1, name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [
            _initializer("w1", rng.normal(0, 0.3, (hidden, features))),
            _initializer("b1", np.zeros(hidden)),
            _initializer("w2", rng.normal(0, 0.3, (classes, hidden))),
            _initializer("b2", np.zeros(classes)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_convnet(path: Path, channels: int = 1, size: int = 8, classes: int = 10, seed: int = 0) -> Path:
    """Conv → Relu → MaxPool → Flatten → Gemm on (batch, channels, size, size) images."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    width = 4
    flat = width * (size // 2) * (size // 2)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "kernel", "kernel_bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
            helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1, name="head"),
        ],
        "convnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [
            _initializer("kernel", rng.normal(0, 0.3, (width, channels, 3, 3))),
            _initializer("kernel_bias", np.zeros(width)),
            _initializer("w", rng.normal(0, 0.1, (classes, flat))),
            _initializer("b", np.zeros(classes)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_with_custom_operator(path: Path, features: int = 64) -> Path:
    """A graph whose one node is an operator of a custom domain, which no converter knows."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Swish", ["input"], ["output"], domain="com.example", name="swish")],
        "custom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", features])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


TINY_SIZES = {"vocab_size": 60, "max_position_embeddings": 32}


def hf_folder(folder: Path, kind: str, labels: int = 2) -> Path:
    """A tiny random-weight Hugging Face model saved with ``save_pretrained`` (no tokenizer)."""
    import transformers

    if kind == "bert":
        config = transformers.BertConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=labels,
            **TINY_SIZES,
        )
        model = transformers.BertForSequenceClassification(config)
    elif kind == "distilbert":
        config = transformers.DistilBertConfig(
            dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=labels, **TINY_SIZES
        )
        model = transformers.DistilBertModel(config)
    elif kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=60, n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        raise ValueError(kind)
    model.save_pretrained(str(folder))
    return folder
