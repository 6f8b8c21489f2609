"""Benchmark: `funcformer serve` under concurrent load vs a minimal FastAPI app that calls
SentenceTransformer.encode per request, both on all-MiniLM-L6-v2 (the same local weights).

Both servers run as subprocesses on 127.0.0.1 and get the same requests, taking turns in
`--rounds` parts (so background load on a shared machine hits both alike):
`--requests` requests of 1-16 SST-2 training texts (distinct texts, so the result cache does
not help), sent by `--clients` concurrent clients that each wait for an answer before sending
again. Each phase stops after `--requests` or `--seconds`, whichever comes first. The function
is a `head` classifier trained here on `--train` SST-2 sentences; the anchor applies the same
head weights to its embeddings, so both answer the same labels (their agreement is printed).

    python bench/serve_load.py                       # 3,000 requests per server
    python bench/serve_load.py --runtime onnx-int8   # funcformer on its int8 ONNX export
    python bench/serve_load.py --dtype bfloat16      # funcformer's torch runtime in bfloat16
    python bench/serve_load.py --requests 300        # a short check
    python bench/serve_load.py --soak                # reload an artifact every 3 s under load

`--soak` runs funcformer alone and saves one of two versions of the function over the served
artifact every `--reload-every` seconds while the load runs: every request must succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import DATA, print_header, read_tsv

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = {"0": "negative", "1": "positive"}
ANCHOR_APP = '''
"""The anchor: a minimal FastAPI app, SentenceTransformer.encode per request, then the same
linear head as the funcformer function (so both answer the same labels)."""
import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(os.environ["ANCHOR_MODEL"], device="cpu")
head = load_file(os.environ["ANCHOR_HEAD"])
weight, bias = head["linear.weight"], head["linear.bias"]  # (C, H), (C,)
labels = os.environ["ANCHOR_LABELS"].split(",")
app = FastAPI()


class Body(BaseModel):
    inputs: list[str]


@app.post("/v1/functions/{name}")
def predict(name: str, body: Body) -> dict:
    logits = model.encode(body.inputs) @ weight.T + bias  # (N, C)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return {"outputs": [{"label": labels[int(p.argmax())], "score": float(p.max()),
                         "scores": dict(zip(labels, map(float, p)))} for p in probs]}


@app.get("/readyz")
def ready() -> dict:
    return {"status": "ready"}
'''


@dataclass
class Run:
    """What one load phase measured."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    texts: int = 0
    errors: list[str] = field(default_factory=list)
    labels: dict[int, list[str]] = field(default_factory=dict)
    """Request index -> the labels answered (for agreement and versions seen)."""
    cpu: float = 0.0
    """CPU seconds the server process used (all threads): on a shared machine, texts per
    CPU-second compares efficiency even when a neighbour takes the cores."""

    def add(self, other: Run) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.texts += other.texts
        self.errors += other.errors
        self.labels |= other.labels
        self.cpu += other.cpu

    def row(self, name: str, base: Run | None = None) -> str:
        done = len(self.latencies)
        rate, texts = done / self.seconds, self.texts / self.seconds
        p50, p99 = quantile(self.latencies, 0.5), quantile(self.latencies, 0.99)
        ratio = (f" = {texts / (base.texts / base.seconds):.2f}x" if base else "")
        p99_ratio = f" = {p99 / quantile(base.latencies, 0.99):.2f}x" if base else ""
        per_cpu = self.texts / max(self.cpu, 1e-9)
        cpu_ratio = f" = {per_cpu / (base.texts / max(base.cpu, 1e-9)):.2f}x" if base else ""
        return (f"| {name} | {done} | {self.texts} | {self.seconds:.1f} | {rate:.1f} | "
                f"{texts:.0f}{ratio} | {p50 * 1e3:.0f} | {p99 * 1e3:.0f}{p99_ratio} | "
                f"{per_cpu:.0f}{cpu_ratio} | {len(self.errors)} |")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def workload(texts: list[str], count: int, max_texts: int, seed: int) -> list[list[str]]:
    """`count` requests of 1..max_texts texts, drawn without repetition while texts last."""
    rng = random.Random(seed)
    pool = list(dict.fromkeys(texts))
    rng.shuffle(pool)
    out, at = [], 0
    for _ in range(count):
        size = rng.randint(1, max_texts)
        out.append([pool[(at + i) % len(pool)] for i in range(size)])
        at += size
    return out


def train(rows: list[tuple[str, str]], count: int, seed: int,
          names: dict[str, str]) -> Any:
    import funcformer

    sample = random.Random(seed).sample(rows, count)
    return funcformer.train("classify", [(t, names[y]) for t, y in sample], method="head",
                            seed=seed, progress=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None,
          timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """Start a server on a free loopback port; returns it and its URL once /readyz is 200."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    handle = open(log, "w")  # noqa: SIM115 (the child writes to it until it exits)
    process = subprocess.Popen([*command, "--port", str(port)], stdout=handle,
                               stderr=subprocess.STDOUT, env=env, cwd=cwd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[2]} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{command[2]} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, then the exit code (a drained funcformer server exits 0)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


async def load(url: str, requests: list[tuple[int, list[str]]], clients: int,
               seconds: float) -> Run:
    """`clients` closed-loop clients share the (index, texts) requests; stops when done or
    out of time."""
    import httpx

    run = Run()
    queue = iter(requests)
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        for index, texts in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/functions/sentiment",
                                           json={"inputs": texts})
            except httpx.HTTPError as err:
                run.errors.append(f"{type(err).__name__}: {err}")
                continue
            if response.status_code != 200:
                run.errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            run.latencies.append(time.perf_counter() - started)
            run.texts += len(texts)
            run.labels[index] = [o["label"] for o in response.json()["outputs"]]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        run.seconds = time.perf_counter() - started
    return run


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(servers: list[tuple[subprocess.Popen, str]], requests: list[list[str]],
            args: argparse.Namespace) -> list[Run]:
    """A warm-up of each server (first calls, lazy imports) on other texts; then the load in
    `args.rounds` parts, the servers taking turns, so a neighbour's burst on a shared machine
    hits both alike."""
    warm = workload([t for t, _ in read_tsv(DATA / "sst2/dev.tsv")], 2 * args.clients,
                    args.max_texts, 99)
    for _, url in servers:
        asyncio.run(load(url, list(enumerate(warm)), args.clients, args.seconds))
    runs = [Run() for _ in servers]
    indexed = list(enumerate(requests))
    size = -(-len(indexed) // args.rounds)
    for start in range(0, len(indexed), size):
        for (process, url), total in zip(servers, runs, strict=True):
            cpu = cpu_seconds(process.pid)
            part = asyncio.run(load(url, indexed[start : start + size], args.clients,
                                    args.seconds / args.rounds))
            part.cpu = cpu_seconds(process.pid) - cpu
            total.add(part)
    return runs


def serve_command(directory: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "funcformer", "serve", str(directory),
            "--max-batch-tokens", str(args.max_batch_tokens), "--max-wait-ms",
            str(args.max_wait_ms), "--runtime", args.runtime,
            *(["--dtype", args.dtype] if args.dtype else [])]


def environment() -> dict[str, str]:
    """The servers import the funcformer this script imports (a worktree's, not /work/main's)."""
    import funcformer

    env = {k: v for k, v in os.environ.items() if k != "FUNCFORMER_API_KEY"}
    env["PYTHONPATH"] = str(Path(funcformer.__file__).resolve().parents[1])
    return env


def compare(args: argparse.Namespace, workdir: Path, rows: list[tuple[str, str]],
            requests: list[list[str]]) -> list[str]:
    from funcformer import _backbone

    fn = train(rows, args.train, 0, NAMES)
    path = fn.save(workdir / "functions" / "sentiment")
    if args.runtime != "torch":
        fn.export_onnx(path, int8=args.runtime == "onnx-int8")
    env = environment()
    (workdir / "anchor_app.py").write_text(ANCHOR_APP, "utf-8")
    anchor_env = {**env, "ANCHOR_MODEL": str(_backbone.resolve(None).path),
                  "ANCHOR_HEAD": str(path / "head.safetensors"),
                  "ANCHOR_LABELS": ",".join(fn.labels)}
    servers = [start(serve_command(workdir / "functions", args), workdir / "funcformer.log",
                     env),
               start([sys.executable, "-m", "uvicorn", "anchor_app:app", "--host",
                      "127.0.0.1", "--log-level", "warning", "--no-access-log"],
                     workdir / "anchor.log", anchor_env, cwd=workdir)]
    try:
        ours, base = measure(servers, requests, args)
        batches = batch_sizes(servers[0][1])
    finally:
        codes = [stop(process) for process, _ in servers]
    same = [a == b for i in ours.labels.keys() & base.labels.keys()
            for a, b in zip(ours.labels[i], base.labels[i], strict=True)]
    return ["| server | requests | texts | seconds | requests/s | texts/s | p50 ms | p99 ms | "
            "texts per CPU-s | errors |", "|---|---|---|---|---|---|---|---|---|---|",
            base.row("anchor: FastAPI + SentenceTransformer.encode per request"),
            ours.row(f"funcformer serve ({args.runtime}"
                     f"{', ' + args.dtype if args.dtype else ''})", base), "",
            f"label agreement with the anchor: {sum(same) / max(len(same), 1):.4f} "
            f"({len(same)} texts); funcformer batches: {batches}; "
            f"funcformer exit code after SIGTERM: {codes[0]}",
            *[f"error: {e}" for e in (ours.errors + base.errors)[:5]]]


def batch_sizes(url: str) -> str:
    """Mean requests and inputs per engine batch, from the server's /metrics."""
    import httpx

    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("funcformer_batch_inputs_", "funcformer_batch_requests_")):
            values[name] = float(value)
    count = max(values.get("funcformer_batch_requests_count", 0), 1)
    return (f"{values.get('funcformer_batch_requests_count', 0):.0f}, "
            f"{values.get('funcformer_batch_requests_sum', 0) / count:.1f} requests and "
            f"{values.get('funcformer_batch_inputs_sum', 0) / count:.0f} texts each on average")


def soak(args: argparse.Namespace, workdir: Path, rows: list[tuple[str, str]],
         requests: list[list[str]]) -> list[str]:
    import httpx

    versions = [train(rows, args.train, 0, NAMES),
                train(rows, args.train, 1, {"0": "neg", "1": "pos"})]
    target = versions[0].save(workdir / "functions" / "sentiment")
    server, url = start(serve_command(workdir / "functions", args), workdir / "funcformer.log",
                        environment())
    saves, done = [0], threading.Event()

    def reload_loop() -> None:
        while not done.wait(args.reload_every):
            saves[0] += 1
            versions[saves[0] % 2].save(target)

    reloader = threading.Thread(target=reload_loop)
    reloader.start()
    try:
        run = measure([(server, url)], requests, args)[0]
    finally:
        done.set()
        reloader.join()
    loads = [line for line in httpx.get(f"{url}/metrics").text.splitlines()
             if line.startswith("funcformer_artifact_loads_total")]
    code = stop(server)
    seen = {"v1" if set(labels) <= {"negative", "positive"} else "v2"
            for labels in run.labels.values()}
    return ["| server | requests | texts | seconds | requests/s | texts/s | p50 ms | p99 ms | "
            "texts per CPU-s | failed |", "|---|---|---|---|---|---|---|---|---|---|",
            run.row(f"funcformer serve, artifact saved every {args.reload_every:g} s"), "",
            f"saves during the load: {saves[0]}; versions answered: {sorted(seen)}; "
            f"{'; '.join(loads)}; exit code after SIGTERM: {code}",
            *[f"error: {e}" for e in run.errors[:5]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-texts", type=int, default=16)
    parser.add_argument("--train", type=int, default=2000, help="SST-2 sentences to train on")
    parser.add_argument("--seconds", type=float, default=900,
                        help="time limit per server (all rounds together)")
    parser.add_argument("--rounds", type=int, default=4, help="the servers take turns this "
                        "many times")
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="funcformer serve's option "
                        "(its default 0: a lone request runs at once)")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--dtype", choices=["bfloat16"], help="the torch runtime's weights "
                        "(default float32)")
    parser.add_argument("--soak", action="store_true")
    parser.add_argument("--reload-every", type=float, default=3.0)
    parser.add_argument("--out", type=Path, help="also write the report here (default: "
                        "bench/results/serve_load[_RUNTIME].txt, serve_soak.txt with --soak)")
    args = parser.parse_args()
    header = io.StringIO()
    with contextlib.redirect_stdout(header):
        print_header()
    print(header.getvalue(), end="", flush=True)
    rows = read_tsv(DATA / "sst2/train.tsv")
    requests = workload([t for t, _ in rows[10_000:]], args.requests, args.max_texts, 0)
    workdir = Path(tempfile.mkdtemp(prefix="ff-serve-"))
    try:
        lines = (soak if args.soak else compare)(args, workdir, rows[:10_000], requests)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    name = "serve_soak" if args.soak else "serve_load"
    out = args.out or RESULTS / (name + ("" if args.runtime == "torch" else f"_{args.runtime}")
                                 + ".txt")
    out.write_text(f"{header.getvalue()}{report}\n", "utf-8")
    print(f"\n(written to {out}; mean texts per request "
          f"{statistics.mean(len(r) for r in requests):.1f})")


if __name__ == "__main__":
    main()
