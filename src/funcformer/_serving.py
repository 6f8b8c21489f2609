"""What the HTTP server runs, without HTTP: the functions under a directory, hot-reloaded
(`Registry`), and the micro-batcher that coalesces concurrent requests (`Batcher`).

Everything here runs on the event loop except `run_batch` (the worker thread) and artifact
loading (a helper thread). The loop alone mutates registry and queue state, so neither needs
a lock beyond the one that keeps two scans from interleaving.

    request ─► Registry.acquire(name) ─► Batcher.submit(Job) ─┐   one worker thread:
                 (a Version, held until the answer is sent)   └─► run_batch(engine, jobs)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._artifact import check_weights, function_folders, read_manifest
from ._data import at_place
from ._errors import ArtifactError, DataError, FuncformerError, is_whole

log = logging.getLogger("funcformer.server")
Stamp = tuple[tuple[str, int, int, int], ...]


class HTTPError(Exception):
    """An answer other than 200: status, error type, message, and the request field at fault."""

    def __init__(self, status: int, kind: str, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.field, self.headers = field, headers or {}

    def body(self) -> dict[str, Any]:
        error = {"type": self.kind, "message": self.message}
        return {"error": error | ({"field": self.field} if self.field else {})}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; past a limit the answer is 413 (429 for the queue).

    >>> Limits(max_inputs=64).max_inputs
    64
    """

    max_body_bytes: int = 1_000_000
    """Largest request body, in bytes."""
    max_inputs: int = 256
    """Most inputs in one request."""
    max_chars: int = 10_000
    """Most characters in one input (a pair's two texts together)."""
    max_queue: int = 4096
    """Most inputs waiting for a batch; a request that would pass it gets 429 + Retry-After."""
    max_generated_tokens: int = 8192
    """Most new tokens one request may ask of a generate function: its prompts times
    `max_new_tokens`. One worker runs every function's batches, so a long generation delays
    the others' requests (256 prompts of 80 tokens held a one-text classify for 19 s)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not is_whole(value) or value < 1:
                raise DataError(f"Limits.{name} ({_flag(name)}) must be a positive integer, "
                                f"got {value!r}.")
        if self.max_queue < self.max_inputs:
            raise DataError(f"max_queue ({_flag('max_queue')}) {self.max_queue} must be at "
                            f"least max_inputs ({_flag('max_inputs')}) {self.max_inputs}, or a "
                            "full request could never be queued. Fix: raise the one or lower "
                            "the other.")


def _flag(name: str) -> str:
    """The `funcformer serve` flag that sets Limits field `name`."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Batching:
    """How concurrent requests are coalesced into engine batches.

    >>> Batching(max_tokens=4096, max_wait_ms=2).max_wait_ms
    2
    """

    max_tokens: int = 8192
    """A batch closes at about this many tokens (estimated as characters / 4 + 2 per input);
    the Engine then packs it into ~1k-token sub-batches sorted by length."""
    max_wait_ms: float = 0.0
    """How long the first request of a batch waits for company when the server is idle. The
    default 0 runs it at once; requests that arrive while a batch runs form the next one, so
    batches grow with the load anyway (with 32 clients, 15 requests a batch either way) and a
    lone request does not wait for a timer (single-text p50 measured 15 against 23 ms at 5)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) \
                or self.max_tokens < 1:
            raise DataError(f"max_batch_tokens must be a positive integer, got "
                            f"{self.max_tokens!r}.")
        if not isinstance(self.max_wait_ms, (int, float)) or not 0 <= self.max_wait_ms <= 10_000:
            raise DataError(f"max_wait_ms must be between 0 and 10000, got {self.max_wait_ms!r}.")


@dataclass(eq=False)
class Version:
    """One loaded version of a function: its name in the Engine, and who still holds it."""

    name: str
    key: str
    """The Engine's name for this version, unique per load: 'sentiment#3'."""
    function: Any
    loaded_at: float
    users: int = 0
    """Requests admitted on this version and not yet answered."""
    retired: bool = False
    """Replaced or removed: dropped from the Engine once `users` reaches 0."""
    files: frozenset[str] = frozenset()
    """The artifact's files when it was loaded (relative paths)."""


@dataclass
class Slot:
    """What the directory holds under one name: the version serving it, the last load error."""

    current: Version | None = None
    error: str | None = None
    stamp: Stamp | None = None
    """The files' stamp at the last load attempt: a broken artifact is retried only when
    something in it changes."""
    missing: int = 0
    """Scans in a row that did not find it."""


class Registry:
    """The functions under `directory`, each name mapped to the version serving it.

    >>> registry = Registry(Path("functions"), engine)       # doctest: +SKIP
    >>> await registry.scan(); registry.acquire("sentiment")  # doctest: +SKIP
    """

    def __init__(self, directory: Path, engine: Any, *, runtime: str = "torch",
                 dtype: str | None = None, device: str = "cpu",
                 on_load: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.engine = engine
        self.runtime = runtime
        self.dtype = dtype
        """The torch runtime's weights: None (float32) or "bfloat16"/"float16"."""
        self.device = device
        """The torch runtime's device ("cpu", "cuda", "cuda:1")."""
        self.on_load = on_load or (lambda result: None)
        """Called with "loaded" or "failed" after each load attempt (metrics)."""
        self.slots: dict[str, Slot] = {}
        self.backbones: dict[str, Version] = {}
        """Untrained embed functions on the backbones the served functions reference."""
        self.scanned = asyncio.Event()
        self._loads = 0
        self._lock = asyncio.Lock()

    async def scan(self) -> None:
        """Load what is new or changed on disk; drop what is gone. A name must be absent on
        two scans in a row to be dropped: saving renames the old directory away a moment
        before the new one arrives."""
        async with self._lock:
            try:
                found = await asyncio.to_thread(artifacts, self.directory)
                for name in [n for n in self.slots if n not in found]:
                    self._vanished(name)
                for name in found:  # listed as loading from now, not once its turn comes
                    self.slots.setdefault(name, Slot())
                for name, (path, stamp) in found.items():
                    slot = self.slots[name]
                    slot.missing = 0
                    if stamp is not None and stamp != slot.stamp:
                        slot.stamp = stamp
                        await self._load(name, path, slot)
            finally:
                self.scanned.set()

    def _vanished(self, name: str) -> None:
        slot = self.slots[name]
        slot.missing += 1
        if slot.missing >= 2:
            del self.slots[name]
            if slot.current is not None:
                self._retire(slot.current)
            log.info("%s: removed (its directory is gone).", name)

    async def _load(self, name: str, path: Path, slot: Slot) -> None:
        try:
            manifest = await asyncio.to_thread(read_manifest, path)
            if slot.current is not None and slot.current.function.digest == manifest.digest:
                # saved again unchanged: keep the loaded copy, once its files are seen to be
                # all there and its weights whole (either would fail a restart)
                _check_files(path, slot.current.files, _files(slot.stamp))
                await asyncio.to_thread(check_weights, path, ArtifactError, SAVE_AGAIN)
                slot.error = None
                return
            function = await asyncio.to_thread(self._read, path, manifest.task)
            if await asyncio.to_thread(_stamp, path) != slot.stamp:
                # saved over while it loaded: its manifest and weights may come from two saves,
                # and results cached under one's digest would be the other's
                slot.stamp = None  # loaded again at the next scan
                log.info("%s: changed while loading; loading it again.", name)
                return
        except Exception as err:  # any broken artifact: report it, keep the old version
            slot.error = describe_error(err)
            self.on_load("failed")
            kept = " The previous version keeps serving." if slot.current else ""
            log.error("%s: cannot load %s: %s%s", name, path, slot.error, kept)
            return
        self._loads += 1
        version = Version(name=name, key=f"{name}#{self._loads}", function=function,
                          loaded_at=asyncio.get_running_loop().time(),
                          files=_files(slot.stamp))
        self.engine.add(version.key, function)
        old, slot.current, slot.error = slot.current, version, None
        if old is not None:
            self._retire(old)
        self.on_load("loaded")
        log.info("%s: serving %s (%s).", name, short_digest(function.digest),
                 "updated" if old is not None else "loaded")

    def _read(self, path: Path, task: str) -> Any:
        from ._function import ONNX_TASKS, load

        runtime = self.runtime if task in ONNX_TASKS else "torch"
        if runtime != "torch":
            return load(path, runtime=runtime)
        return load(path, runtime=runtime, dtype=self.dtype, device=self.device)

    def acquire(self, name: str) -> Version:
        """The version serving `name`, held until `release`; an HTTPError if there is none."""
        slot = self.slots.get(name)
        if slot is not None and slot.current is not None:
            slot.current.users += 1
            return slot.current
        if slot is not None and slot.error is not None:
            error = slot.error if slot.error.endswith(".") else slot.error + "."
            raise HTTPError(503, "unavailable", f"Function '{name}' failed to load: {error} "
                            f"Once {self.directory / name} is mended or replaced, it is "
                            "reloaded automatically.")
        if slot is not None or not self.scanned.is_set():
            raise HTTPError(503, "loading", "The server is still loading its functions; retry "
                            "shortly.", headers={"Retry-After": "1"})
        raise HTTPError(404, "not_found", f"No function named {_quoted(name)}. Functions "
                        f"here: {_some(sorted(self.slots))} (GET /v1/functions).")

    def release(self, version: Version) -> None:
        version.users -= 1
        if version.retired and version.users == 0:
            self.engine.remove(version.key)

    def _retire(self, version: Version) -> None:
        version.retired = True
        if version.users == 0:
            self.engine.remove(version.key)

    def backbone_names(self) -> list[str]:
        """Encoder backbones referenced (not included) by the functions now served; a
        generate function's causal LM is no sentence encoder, so it is not one."""
        return sorted({s.current.function.manifest.backbone.name for s in self.slots.values()
                       if s.current is not None
                       and not s.current.function.manifest.backbone.included
                       and s.current.function.manifest.task != "generate"})

    async def acquire_embedder(self, model: str) -> Version:
        """An `embed` function by name, or an untrained one on a served backbone by name."""
        if model in self.slots:
            version = self.acquire(model)
            if version.function.manifest.task != "embed":
                self.release(version)
                raise HTTPError(422, "invalid_request", f"model: '{model}' is a "
                                f"{version.function.manifest.task} function; embeddings come "
                                "from an embed function or a backbone.", field="model")
            return version
        if model not in self.backbones:
            if model not in self.backbone_names():
                models = sorted({n for n, s in self.slots.items() if s.current is not None
                                 and s.current.function.manifest.task == "embed"}
                                | set(self.backbone_names()))
                raise HTTPError(404, "not_found", f"model: no embed function or backbone "
                                f"named {_quoted(model)}. Models here: {_some(models)}.",
                                field="model")
            try:
                function = await asyncio.to_thread(_untrained_embedder, model, self.dtype,
                                                   self.device)
            except FuncformerError as err:  # gone from disk since, damaged, not cached
                raise HTTPError(503, "unavailable", f"model: the backbone {_quoted(model)} "
                                f"cannot be loaded here: {str(err)[:300]}",
                                field="model") from None
            if model not in self.backbones:  # a concurrent first request may have made one
                self.backbones[model] = Version(name=model, key=f"backbone:{model}",
                                                function=function, loaded_at=0.0)
                self.engine.add(f"backbone:{model}", function)
        version = self.backbones[model]
        version.users += 1
        return version

    def describe(self) -> list[dict[str, Any]]:
        """One entry per name for GET /v1/functions (failed ones with their error)."""
        out = []
        for name in sorted(self.slots):
            slot = self.slots[name]
            status = "ready" if slot.current else ("failed" if slot.error else "loading")
            entry: dict[str, Any] = {"name": name, "status": status, "error": slot.error}
            if slot.current is not None:
                entry |= describe_function(slot.current.function)
            out.append(entry)
        return out


def _untrained_embedder(backbone: str, dtype: str | None = None, device: str = "cpu") -> Any:
    from . import _backbone
    from ._tasks.embed import from_backbone

    # offline: the name comes from a served manifest, and a request must not make the
    # server fetch (and then run) whatever a hub holds under it
    return from_backbone(_backbone.load(backbone, dtype=dtype, device=device, offline=True))


def describe_function(fn: Any) -> dict[str, Any]:
    from ._function import call_options

    manifest = fn.manifest
    return {"task": manifest.task, "method": manifest.method, "labels": list(manifest.labels),
            "backbone": manifest.backbone.name, "digest": fn.digest,
            "version": short_digest(fn.digest), "metrics": manifest.metrics,
            "options": call_options(fn.predict), "runtime": fn.runtime,
            "created_at": manifest.created_at}


def short_digest(digest: str) -> str:
    return digest.split(":")[-1][:12]


def describe_error(err: BaseException) -> str:
    return str(err) if isinstance(err, FuncformerError) else f"{type(err).__name__}: {err}"


def artifacts(directory: Path) -> dict[str, tuple[Path, Stamp | None]]:
    """Each artifact directly under `directory` (hidden names skipped: saves in progress),
    with a stamp that changes whenever any of its files does (None while it is changing)."""
    return {path.name: (path, _stamp(path)) for path in function_folders(directory)}


def _stamp(path: Path) -> Stamp | None:
    try:
        files = [(f, f.stat()) for f in path.rglob("*") if f.is_file()]
    except OSError:  # renamed or deleted while we looked: the next scan sees the result
        return None
    return tuple(sorted((str(f.relative_to(path)), s.st_size, s.st_mtime_ns, s.st_ino)
                        for f, s in files))


def check_options(fn: Any, options: dict[str, Any]) -> None:
    from ._function import options_text, unknown_option

    unknown = unknown_option(fn.predict, options)
    if unknown is not None:  # quoted in part: a client's name can be any length
        name = unknown if len(unknown) <= 80 else unknown[:80] + "..."
        raise HTTPError(422, "invalid_request", f"options.{name}: not an option of "
                        f"{fn.manifest.task} functions (options: {options_text(fn.predict)}).",
                        field=f"options.{name}")


def admit(fn: Any, inputs: list[Any], limits: Limits, field: str = "inputs") -> list[Any]:
    """Inputs checked against the limits (413) and validated by the function (422); errors
    name `field` (the request's name for them: "input" in OpenAI's embeddings request)."""
    if len(inputs) > limits.max_inputs:
        raise HTTPError(413, "too_large", f"{field}: {len(inputs)} inputs, over the limit of "
                        f"{limits.max_inputs} per request (--max-inputs). Fix: split the request.",
                        field=field)
    for i, value in enumerate(inputs):
        chars = sum(len(text) for text in _measured(value, f"{field}.{i}"))
        if chars > limits.max_chars:
            raise HTTPError(413, "too_large", f"{field}.{i}: {chars:,} characters, over the "
                            f"limit of {limits.max_chars:,} per input (--max-chars). Fix: "
                            "shorten or split it.", field=f"{field}.{i}")
    try:
        return fn.read_inputs(inputs)
    except (FuncformerError, ValueError, TypeError) as err:
        raise HTTPError(422, "invalid_input", for_http(str(err), field),
                        field=_culprit(fn, inputs, field)) from None


def for_http(message: str, field: str) -> str:
    """A reader's message in the request's terms: '<list>, index 1' is `field`.1, and a fix
    names the JSON key, not the CLI flag that would set it.

    Field names cannot be set over HTTP, so the fix of naming them goes; a pair function's
    input form is said instead, and the Python call that makes one is not.

    >>> print(for_http("<list>, index 1: field 'text_b' is missing. Fix: add it, or name the "
    ...                "field with --set text_b_column=... / text_b_column= (fields here: "
    ...                "text_a).", "inputs"))  # doctest: +NORMALIZE_WHITESPACE
    inputs.1: field 'text_b' is missing. Fix: add it (fields here: text_a); a pair function
    takes [text_a, text_b] pairs or objects with both fields.
    """
    message = at_place(message, lambda i: f"{field}.{i}")
    message = re.sub(r"--set \w+=\.\.\. / |--[a-z][\w-]* / ", "", message)
    message = re.sub(r",? or name the field with \w+_column= ", " ", message)
    message = message.replace(' (funcformer.train("pair", ...))', "")
    message = re.sub(r" \(CLI: [^)]*\)", "", message)  # the command line's own form
    if "field 'text_b' is missing" in message:
        message = message.rstrip(".") + ("; a pair function takes [text_a, text_b] pairs or "
                                         "objects with both fields.")
    return message


def _culprit(fn: Any, inputs: list[Any], field: str) -> str:
    """The path of the first input the function rejects on its own."""
    for i, value in enumerate(inputs):
        try:
            fn.read_inputs([value])
        except (FuncformerError, ValueError, TypeError):
            return f"{field}.{i}"
    return field


def admit_generation(fn: Any, inputs: list[Any], options: dict[str, Any],
                     limits: Limits) -> None:
    """413 when a generate request asks for more new tokens than `limits` allow (prompts
    times max_new_tokens, the call's or the function's default)."""
    decoding = getattr(fn, "decoding", None)
    if fn.manifest.task != "generate" or decoding is None:
        return
    each = options.get("max_new_tokens", decoding.max_new_tokens)
    if not is_whole(each) or each < 1:
        return  # the function's own check words that (422)
    if len(inputs) * each > limits.max_generated_tokens:
        given = "max_new_tokens" in options
        asked = f"{len(inputs) * each:,}" if each < 10 ** 12 else "over 10**12"
        source = "" if given else f" (the function's default, {each:,})"
        raise HTTPError(413, "too_large", f"{len(inputs)} prompts of up to "
                        f"{each if each < 10 ** 12 else 'over 10**12'} new tokens{source} ask "
                        f"for {asked} tokens, over the limit of "
                        f"{limits.max_generated_tokens:,} per request "
                        f"({_flag('max_generated_tokens')}). Fix: send fewer prompts per "
                        "request, or a smaller max_new_tokens in options.",
                        field="options.max_new_tokens" if given else "inputs")


def admit_options(options: dict[str, Any], limits: Limits) -> None:
    """Call options are held to the limits of inputs: at most max_inputs strings (names and
    values), each at most max_chars long (zero-shot `labels` could otherwise carry 60,000
    names, or one of 400,000 characters, past every limit)."""
    strings = _measured(options, "options")
    if len(strings) > limits.max_inputs:
        raise HTTPError(413, "too_large", f"options: {len(strings):,} names and values, over "
                        f"the limit of {limits.max_inputs} (--max-inputs). Fix: pass fewer "
                        "labels or values.", field="options")
    longest = max(strings, key=len, default="")
    if len(longest) > limits.max_chars:
        raise HTTPError(413, "too_large", f"options: a value of {len(longest):,} characters, "
                        f"over the limit of {limits.max_chars:,} (--max-chars). Fix: shorten "
                        "it.", field="options")


MAX_DEPTH = 8
"""Deepest nesting of lists and objects in one input or the options (a pair is 1 deep)."""


class _TooDeep(Exception):
    """Raised by strings_in past MAX_DEPTH; _measured turns it into a 422."""


def _measured(value: Any, field: str) -> list[str]:
    """strings_in(value), or a 422 naming `field` when lists or objects nest past MAX_DEPTH."""
    try:
        return list(strings_in(value))
    except _TooDeep:
        raise HTTPError(422, "invalid_input", f"{field}: lists or objects nested more than "
                        f"{MAX_DEPTH} deep. Fix: send a text, a pair of texts or an object of "
                        "fields.", field=field) from None


def strings_in(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string of one input (a text, a pair, a row) or of the options, object keys
    included; _TooDeep past MAX_DEPTH levels (no recursion limit reached on hostile JSON).

    >>> list(strings_in({"text": "abc", "tags": ["x", "yz"]}))
    ['text', 'abc', 'tags', 'x', 'yz']
    """
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple, dict)):
        if depth >= MAX_DEPTH:
            raise _TooDeep
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(value, dict):
                yield str(key)
            yield from strings_in(item, depth + 1)


def count_chars(value: Any) -> int:
    """Characters in all the strings of one input (see strings_in)."""
    return sum(len(text) for text in strings_in(value))


@dataclass(eq=False)
class Job:
    """One admitted request, waiting for or in a batch."""

    group: Hashable
    """Jobs of one group may share a batch (see `group_of`)."""
    version: Version
    inputs: list[Any]
    options: dict[str, Any]
    render: Callable[[list[Any]], bytes]
    """This job's results -> its response body; runs in the worker thread."""
    future: asyncio.Future[bytes]
    arrived: float
    tokens: int = 0

    def __post_init__(self) -> None:
        self.tokens = sum(count_chars(x) // 4 + 2 for x in self.inputs)


def group_of(version: Version, options: dict[str, Any]) -> Hashable:
    """Functions that share an encoder state batch together (one backbone pass for all);
    others batch per version; calls with options per version and options."""
    fn = version.function
    if options:
        return ("options", version.key, json.dumps(options, sort_keys=True, default=str))
    if fn.shares_features:
        return ("shared", fn.encoder_key)
    return ("own", version.key)


def run_batch(engine: Any, jobs: list[Job], gone: Callable[[], bool] | None = None
              ) -> list[bytes | BaseException]:
    """Each job's response body, or the error that job alone raises: a failing batch is run
    again one job at a time, so one bad input never fails the other requests. `gone`: true
    once no job's client waits any more; a generation then stops between two tokens (what
    it returns is not sent)."""
    from ._causal import STOP, Stopped

    token = STOP.set(gone)
    try:
        results = _compute(engine, jobs)
        return [job.render(r) for job, r in zip(jobs, results, strict=True)]
    except Stopped as err:  # nobody to answer: no job is run again
        return [err] * len(jobs)
    except Exception as err:
        if len(jobs) == 1:
            return [err]
        return [run_batch(engine, [job], gone)[0] for job in jobs]
    finally:
        STOP.reset(token)


def _compute(engine: Any, jobs: list[Job]) -> list[list[Any]]:
    inputs = [x for job in jobs for x in job.inputs]
    first = jobs[0]
    if first.options:  # one version, one set of options (no result cache for these)
        outputs = {first.version.key: first.version.function.predict(inputs, **first.options)}
    else:  # shared: every version runs on every input, after one encoder pass
        outputs = engine.run([job.version.key for job in jobs], inputs)
    out, start = [], 0
    for job in jobs:
        out.append(outputs[job.version.key][start : start + len(job.inputs)])
        start += len(job.inputs)
    return out


def _all_gone(jobs: list[Job]) -> Callable[[], bool]:
    """A check, safe to call from the worker thread, that turns true once every job's future
    is done while the batch runs: only a client that went away (the request task cancelled,
    and the future it awaited with it) does that before the batch's results are set."""
    gone = threading.Event()
    waiting = [j for j in jobs if not j.future.done()]
    left = [len(waiting)]

    def done(_: Any) -> None:  # on the event loop's thread
        left[0] -= 1
        if left[0] == 0:
            gone.set()

    if not waiting:
        gone.set()
    for job in waiting:
        job.future.add_done_callback(done)
    return gone.is_set


class Batcher:
    """Queues jobs and runs them as batches, one batch at a time, in one worker thread.

    The oldest waiting job's group goes next: its batch closes when the group's queued inputs
    reach `batching.max_tokens` or when that job has waited `max_wait_ms`, so under load
    batches grow while the previous one runs.
    """

    def __init__(self, engine: Any, batching: Batching, max_queue: int,
                 observe: Callable[[list[Job]], None] | None = None) -> None:
        self.engine = engine
        self.batching = batching
        self.max_queue = max_queue
        self.observe = observe or (lambda jobs: None)
        """Called with each batch before it runs (metrics)."""
        self.queued = 0
        """Inputs waiting for a batch."""
        self._pending: dict[Hashable, deque[Job]] = {}
        self._running: list[Job] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="funcformer-batch")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        """Stop dispatching; jobs still queued or running are answered 503."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        stopped = HTTPError(503, "shutting_down", "The server is shutting down; retry on "
                            "another instance.")
        for job in [*self._running, *(j for q in self._pending.values() for j in q)]:
            if not job.future.done():
                job.future.set_exception(stopped)
        self._pending.clear()
        self.queued = 0
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise 429 when the queue is full."""
        if self.queued + len(job.inputs) > self.max_queue:
            raise HTTPError(429, "queue_full", f"The queue is full ({self.queued} inputs "
                            f"waiting, limit {self.max_queue}, --max-queue); retry after a "
                            "second.",
                            headers={"Retry-After": "1"})
        self._pending.setdefault(job.group, deque()).append(job)
        self.queued += len(job.inputs)
        self._arrived.set()

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._take(await self._next_group())
            if not jobs:
                continue
            self.observe(jobs)
            self._running = jobs
            results = await loop.run_in_executor(self._executor, run_batch, self.engine, jobs,
                                                 _all_gone(jobs))
            self._running = []
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def _next_group(self) -> Hashable:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            group = min(self._pending, key=lambda g: self._pending[g][0].arrived)
            due = self._pending[group][0].arrived + self.batching.max_wait_ms / 1000
            tokens = sum(job.tokens for job in self._pending[group])
            if tokens >= self.batching.max_tokens or loop.time() >= due:
                return group
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), due - loop.time())

    def _take(self, group: Hashable) -> list[Job]:
        """Jobs of `group` up to the token budget (at least one), oldest first."""
        queue = self._pending[group]
        jobs: list[Job] = []
        tokens = 0
        while queue and (not jobs or tokens + queue[0].tokens <= self.batching.max_tokens):
            job = queue.popleft()
            self.queued -= len(job.inputs)
            if not job.future.done():
                jobs.append(job)
                tokens += job.tokens
        if not queue:
            del self._pending[group]
        return jobs


SAVE_AGAIN = ("Fix: save the function again (its manifest is unchanged, so the copy loaded "
              "before keeps serving until then).")


def _files(stamp: Stamp | None) -> frozenset[str]:
    return frozenset(entry[0] for entry in stamp or ())


def _check_files(path: Path, loaded: frozenset[str], now: frozenset[str]) -> None:
    """An ArtifactError naming a file the loaded version had and the directory has lost."""
    gone = sorted(loaded - now)
    if gone:
        raise ArtifactError(f"{path / gone[0]}: gone, though the manifest is unchanged"
                            + (f" ({len(gone) - 1} more files too)" if len(gone) > 1 else "")
                            + f". {SAVE_AGAIN}")


def _quoted(name: str, most: int = 80) -> str:
    """A client's name in a message, quoted and cut short (it could be 20,000 characters)."""
    return repr(name if len(name) <= most else name[:most] + "...")


def _some(names: list[str], most: int = 20) -> str:
    """At most `most` names, then how many more."""
    shown = ", ".join(names[:most]) or "none"
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
