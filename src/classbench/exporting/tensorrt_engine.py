"""TensorRT engines (``model.fp16.plan``, ``model.int8.plan``) built from the ONNX graph with the ``tensorrt``
Python package, on a machine with a CUDA GPU; the optional extra ``classbench[tensorrt]``.

NOT RUN in classbench's own tests or docs so far (no CUDA GPU was available where they were written): only the
refusal without a GPU or package is tested. fp16: the fp32 graph with ``BuilderFlag.FP16`` (TensorRT picks the
precision per layer). INT8: the QDQ graph quantized for TensorRT (signed, symmetric int8 activations: TensorRT
reads no uint8 zero points) with explicit quantization, fp16 allowed for the layers left in float. One optimisation
profile covers batch 1..``MAX_BATCH`` (opt 8). Engines are specific to the GPU and TensorRT version: on a Jetson,
build on the board (``trtexec``, docs/deploy.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from classbench.errors import ClassbenchError, ModelError

MAX_BATCH = 32


def require_tensorrt() -> None:
    """One ClassbenchError line when there is no CUDA GPU or no ``tensorrt`` package (both named when both)."""
    import importlib.util

    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU here")
    if importlib.util.find_spec("tensorrt") is None:
        missing.append('tensorrt is not installed (pip install "classbench[tensorrt]")')
    if missing:
        raise ClassbenchError(f"--format tensorrt needs a CUDA GPU and the tensorrt package: {'; '.join(missing)}; "
                              "on a Jetson build the engine from model.onnx with trtexec (docs/deploy.md)")


def build_engine(onnx_data: bytes, img_size: int, int8: bool) -> bytes:
    """A serialized TensorRT engine for ``onnx_data`` (fp16 flag always; INT8 from its Q/DQ nodes when ``int8``)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT could not parse the ONNX graph ({errors[:300]})")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    name, s = network.get_input(0).name, int(img_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(name, (1, 3, s, s), (min(8, MAX_BATCH), 3, s, s), (MAX_BATCH, 3, s, s))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError("TensorRT failed to build the engine (see its log above)")
    return bytes(serialized)


class TensorRTRunner:
    """Runs a serialized engine on the GPU: ``run(batch) -> logits`` (float32, chunks of ``MAX_BATCH``); torch
    CUDA tensors hold the buffers."""

    def __init__(self, engine: bytes) -> None:
        import tensorrt as trt

        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_name = inputs[0], next(n for n in names if n not in inputs)

    def run(self, batch: Any) -> np.ndarray:
        """Logits for an already-normalised NCHW float batch (numpy array or torch tensor)."""
        import torch

        x = torch.as_tensor(np.asarray(batch, dtype=np.float32)).cuda().contiguous()
        out = []
        stream = torch.cuda.current_stream()
        for chunk in x.split(MAX_BATCH):
            chunk = chunk.contiguous()
            self.context.set_input_shape(self.input_name, tuple(chunk.shape))
            logits = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                                 device="cuda")
            self.context.set_tensor_address(self.input_name, chunk.data_ptr())
            self.context.set_tensor_address(self.output_name, logits.data_ptr())
            self.context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            out.append(logits.cpu().numpy())
        return np.concatenate(out)
