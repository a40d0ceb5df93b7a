"""A classifier written in onnxscript (module level: onnxscript reads the function's globals and annotations)."""

import numpy as np
import onnxscript
from onnxscript import FLOAT
from onnxscript import opset17 as op

WEIGHT = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)


@onnxscript.script()
def classifier(features: FLOAT["batch", 8]) -> FLOAT["batch", 4]:  # noqa: F821  a symbolic dimension
    return op.Relu(op.MatMul(features, op.Constant(value=WEIGHT)))
