"""Carry all-MiniLM-L6-v2 to a lent GPU machine under the transfer limit, and unpack it there.

    python scripts/gpu_pack.py pack SRC_DIR .gpu/minilm      # here: 23 MB instead of 90 MB
    python scripts/gpu_pack.py unpack .gpu/minilm /tmp/minilm  # there: float32 safetensors again

A call to the device tool carries 64 MiB in all. The model's float32 weights are 90 MB, float16
45 MB, and the wheels the GPU machine lacks (transformers 5.24, tokenizers, pydantic, ...) take
25 MB beside them. So every matrix is stored as int8 with one float32 scale per row (symmetric,
round to nearest), and vectors (biases, LayerNorm) as float16. Unpacked, the model is the same
architecture with weights within half a quantisation step of the original's (relative error
about 0.4% per row): fine for timing, for comparing a GPU's features with a CPU's on the same
weights, and for fine-tuning, but it is not the published checkpoint, so accuracies from it are
close to, not equal to, the CPU runs'.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
PACKED = "packed.safetensors"


def pack(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        WEIGHTS, "*.bin", "*.onnx", "onnx", "openvino", "*.h5", "*.msgpack", "*.ot"))
    packed: dict[str, torch.Tensor] = {}
    for name, tensor in load_file(source / WEIGHTS).items():
        tensor = tensor.float()
        if tensor.dim() == 2:
            scale = tensor.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
            packed[f"{name}::q"] = torch.round(tensor / scale).to(torch.int8)
            packed[f"{name}::scale"] = scale
        else:
            packed[name] = tensor.half()
    save_file(packed, target / PACKED)


def unpack(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(PACKED))
    weights: dict[str, torch.Tensor] = {}
    packed = load_file(source / PACKED)
    for name, tensor in packed.items():
        if name.endswith("::scale"):
            continue
        if name.endswith("::q"):
            base = name[:-3]
            weights[base] = (tensor.float() * packed[f"{base}::scale"]).contiguous()
        else:
            weights[name] = tensor.float()
    save_file(weights, target / WEIGHTS, metadata={"format": "pt"})


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]), Path(sys.argv[3]))
