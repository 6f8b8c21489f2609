"""Benchmark: memory of many LoRA functions in one process, funcformer vs transformers + PEFT.

    python bench/lora_memory.py               # 1 and 10 LoRA(r=8) functions per process
    python bench/lora_memory.py --count 20    # 1 and 20

Ten LoRA functions (each trained for one epoch on 100 SST-2 rows with its own seed: their
weights differ, their size does not) are saved, then loaded in a fresh process per system and
count, and each is called once on 64 SST-2 dev texts. Reported per process: its peak
resident memory (VmHWM), and the resident memory after the calls (VmRSS, once freed memory is
handed back with malloc_trim).
The cost of one more function is (peak with `count` - peak with 1) / (count - 1), which takes
out what every process pays (Python, torch, the first backbone, one call's activations); the
peak, unlike the memory after the calls, does not depend on what the allocator kept.

Systems:
- funcformer: `funcformer.load(dir)` for each function; the adapters attach to the one shared
  backbone and its fused weights.
- funcformer, merged: `funcformer.load(dir, merge_adapter=True)`: each folds its adapter into
  private copies of the adapted weights (faster calls, more memory).
- transformers + PEFT, one model per function (the anchor a function-per-model server does):
  `AutoModel.from_pretrained(backbone)` and PEFT's adapter on it, for each function.
- transformers + PEFT, all adapters on one model (PEFT's multi-adapter way):
  `inject_adapter_in_model` under one name per function, the active one switched per call.
The anchors load the very adapter files funcformer saved (PEFT's own format) and compute the
mean-pooled embeddings; the classification head funcformer adds is 3 kB.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import DATA, print_header, print_table, read_tsv

SYSTEMS = ("funcformer", "funcformer-merged", "peft-one-model-each", "peft-one-model")
LABELS = {"funcformer": "funcformer (adapters on the shared backbone)",
          "funcformer-merged": "funcformer, merge_adapter=True (private adapted weights)",
          "peft-one-model-each": "transformers + PEFT, one model per function (anchor)",
          "peft-one-model": "transformers + PEFT, every adapter on one model (anchor)"}


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB: VmRSS (resident now) or
    VmHWM (its peak; unlike getrusage's maximum, not inherited from the parent across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def measure(system: str, paths: list[Path], backbone: str, texts: list[str]) -> dict[str, float]:
    """Load the functions at `paths` as `system` does, call each on `texts`; memory after."""
    if system.startswith("funcformer"):
        import funcformer

        functions = [funcformer.load(p, merge_adapter=system.endswith("merged")) for p in paths]
        for fn in functions:
            fn.predict(texts)
    else:
        import torch
        from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
        from peft.tuners.lora import LoraLayer
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        models: list[tuple[Any, str]] = []
        shared = None
        for i, path in enumerate(paths):
            config = LoraConfig.from_pretrained(str(path / "adapter"))
            state = load_file(str(path / "adapter" / "adapter_model.safetensors"))
            if system == "peft-one-model-each" or shared is None:
                shared = AutoModel.from_pretrained(backbone).eval()
            name = f"fn{i}"
            inject_adapter_in_model(config, shared, adapter_name=name)
            set_peft_model_state_dict(shared, state, adapter_name=name)
            models.append((shared, name))
        with torch.inference_mode():
            for model, name in models:
                for module in model.modules():
                    if isinstance(module, LoraLayer):
                        module.set_adapter(name)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                (hidden * mask).sum(1) / mask.sum(1)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {"rss_mb": memory_mb("VmRSS"), "peak_mb": memory_mb("VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = [text for text, _ in read_tsv(DATA / "sst2/dev.tsv")][:64]
    if args.one:
        spec = json.loads(args.one[1])
        print(json.dumps(measure(args.one[0], [Path(p) for p in spec["paths"]],
                                 spec["backbone"], texts)))
        return
    if args.count < 2:
        parser.error("--count must be at least 2")
    print_header()
    import funcformer
    from funcformer import _backbone

    rows = read_tsv(DATA / "sst2/train.tsv")
    scratch = Path(tempfile.mkdtemp(prefix="ff-lora-memory-"))
    paths = []
    for seed in range(args.count):
        sample = random.Random(seed).sample(rows, 100)
        fn = funcformer.train("classify", sample, method="lora", epochs=1, seed=seed,
                              progress=False)
        paths.append(fn.save(scratch / f"fn{seed}"))
    adapter_kb = sum(f.stat().st_size for f in (paths[0] / "adapter").iterdir()) / 1e3
    backbone = str(_backbone.resolve(None, False).path)
    print(f"{args.count} LoRA(r=8) functions (adapter {adapter_kb:.0f} kB each), each called "
          f"once on 64 SST-2 dev texts; one process per system and count\n")

    table = []
    for system in SYSTEMS:
        measured = {}
        for count in (1, args.count):
            spec = json.dumps({"paths": [str(p) for p in paths[:count]], "backbone": backbone})
            out = subprocess.run([sys.executable, __file__, "--one", system, spec],
                                 capture_output=True, text=True, check=True)
            measured[count] = json.loads(out.stdout.strip().splitlines()[-1])
        one, many = measured[1], measured[args.count]
        extra = (many["peak_mb"] - one["peak_mb"]) / (args.count - 1)
        table.append((LABELS[system], f"{one['peak_mb']:.0f}", f"{many['peak_mb']:.0f}",
                      f"{extra:.1f}", f"{one['rss_mb']:.0f} / {many['rss_mb']:.0f}"))
        print(f"{system}: {measured}", flush=True)
    print()
    print_table(["system", "peak, 1 function (MB)", f"peak, {args.count} functions (MB)",
                 "MB per extra function", f"after the calls, 1 / {args.count} (MB)"], table)


if __name__ == "__main__":
    main()
