"""An ONNX Runtime result held in memory, so ``quantize()`` without ``output_dir`` leaves no folder behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from optiforge.errors import ModelError
from optiforge.exporters.onnx import OnnxModule, register_onnx_exporter, session_options
from optiforge.files import atomic_write


def _session(data: bytes, threads: int | None, spinning: bool) -> Any:
    import onnxruntime

    try:
        options = session_options(threads, spinning)
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelError(f"onnx: ONNX Runtime cannot load the quantized graph: {str(error).splitlines()[0]}") from None


class OnnxInMemory(OnnxModule):
    """An :class:`OnnxModule` whose graph is held as bytes (``path`` is None); export it with ``export_onnx``."""

    def __init__(self, source: OnnxModule) -> None:
        nn.Module.__init__(self)
        self.data = Path(source.path).read_bytes()
        self.path = None
        self.threads = source.threads
        self.spinning = source.spinning
        self._runtime = _session(self.data, self.threads, self.spinning)
        self.input_names = list(source.input_names)
        self.output_names = list(source.output_names)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._runtime = _session(self.data, self.threads, self.spinning)

    def extra_repr(self) -> str:
        return f"in memory ({len(self.data)} bytes), inputs={self.input_names}"


@register_onnx_exporter(OnnxInMemory)
def _write_graph(model: OnnxInMemory, path: Path, example_input: Any) -> Path:
    return atomic_write(path, lambda file: file.write(model.data))
