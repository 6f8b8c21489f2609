"""Artifacts: a directory with `funcformer.json` and safetensors files. Never pickle.

    funcformer.json      manifest (format version, task, labels, backbone name + digest, ...)
    head.safetensors     the head's weights
    encoder/             only for `full`: the fine-tuned encoder, its tokenizer and pooling
    adapter/             only for `lora`: adapter_config.json + adapter_model.safetensors (PEFT)
    memory.jsonl         `classify` with an exemplar memory: examples replayed by `update`
    index/               `search`: vectors.safetensors + documents.jsonl
    model/               `generate` after fine-tuning: the causal LM and its tokenizer
    onnx/                optional, from `funcformer export`: model.onnx / model-int8.onnx,
                         the tokenizer and export.json (the function digest it came from,
                         each graph's sha256)

Writes go to a temporary sibling directory that is renamed into place, so an interrupted save
never leaves a loadable half-artifact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ._data import file_sha256
from ._errors import ArtifactError, FuncformerError

FORMAT_VERSION = 1
MANIFEST = "funcformer.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
ONNX_DIR = "onnx"
EXPORT_RECORD = "export.json"
"""In ONNX_DIR: the digest of the function the graphs were exported from, and their sha256."""
# Sentence-transformers files that carry pooling and max length; copied with a full encoder.
POOLING_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
DAMAGED_FIX = "Fix: copy the function again from its source, or retrain it."
"""What to do about a damaged file of a function: its manifest alone cannot rebuild it."""


class BackboneRef(BaseModel):
    """Which backbone a function was built on, and whether its weights are in the artifact."""

    model_config = ConfigDict(extra="allow")
    name: str
    digest: str
    included: bool = False
    """True for `full`: the fine-tuned encoder lives in encoder/ and `digest` is its digest."""
    base_digest: str | None = None
    """For an included encoder: the digest of the pretrained backbone it started from."""


class HeadSpec(BaseModel):
    """Enough to rebuild the head module before loading its weights."""

    model_config = ConfigDict(extra="allow")
    type: str = "linear"
    hidden: int
    outputs: int


class Manifest(BaseModel):
    """The contents of funcformer.json."""

    model_config = ConfigDict(extra="allow")
    format_version: int = FORMAT_VERSION
    task: str
    labels: list[str] = []
    method: str
    backbone: BackboneRef
    head: HeadSpec | None = None
    """None for tasks without a head (embed, search, generate)."""
    options: dict[str, Any] = {}
    """Task settings needed to rebuild the function: thresholds, template, index size..."""
    adapter: dict[str, Any] | None = None
    """For `lora`: {"type": "lora", "r", "alpha", "targets", "size"}; for `adalora`, `ia3`,
    `prompt`, `prefix`: {"type", its settings, "targets" (if any), "parameters"}. Its weights
    are in adapter/ (PEFT's format) and attach to the referenced backbone."""
    memory: dict[str, Any] | None = None
    """Exemplar memory for `update` ({"per_label", "examples"}), stored in memory.jsonl."""
    versions: list[dict[str, Any]] = []
    """Lineage after `update`: each version's digest, parent digest, data size and metrics."""
    digest: str
    """The function's own digest: labels, head weights and encoder weights together."""
    files: dict[str, str] = {}
    """sha256 of each file saved with the manifest (by path in the directory), checked at
    load: a file swapped since would run under `digest`. Empty for artifacts from before."""
    config: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
    library_version: str
    created_at: str

    @model_validator(mode="after")
    def _classify_has_a_head(self) -> Manifest:
        if self.task == "classify" and (self.head is None or len(self.labels) < 1):
            raise ValueError("a classify function needs 'labels' and 'head'")
        return self


def read_manifest(path: Path) -> Manifest:
    """Read and check funcformer.json; every problem is an ArtifactError saying what to do."""
    from ._version import __version__

    if not path.is_dir():
        what = "is a file, not a function directory" if path.is_file() else \
            ": no such directory"
        raise ArtifactError(f"{path}{' ' if path.is_file() else ''}{what}. Fix: pass the "
                            "directory that 'funcformer train --out' or fn.save() wrote.")
    file = path / MANIFEST
    if file.exists() and not file.is_file() and not file.is_dir():
        check_plain_files(path, contained=True)  # a pipe named funcformer.json
    if not file.is_file():
        inside = [p.name for p in function_folders(path)]
        if inside:  # a folder of functions (what serve takes), named where one is wanted
            raise ArtifactError(f"{path}: not a function but a folder of functions "
                                f"({', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''})."
                                f" Fix: pass one of them, e.g. {path / inside[0]}.")
        raise ArtifactError(f"{path}: not a funcformer function (no {MANIFEST}). Fix: pass the "
                            "directory that 'funcformer train --out' or fn.save() wrote (a save "
                            "that was interrupted leaves none: train or save again).")
    check_plain_files(path, contained=True)
    try:
        raw = json.loads(file.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{file}: not valid JSON ({err}). The artifact is damaged; save "
                            "it again.") from None
    except RecursionError:
        raise ArtifactError(f"{file}: nested too deeply to read as JSON; no funcformer wrote "
                            "it. The artifact is damaged; save it again.") from None
    except OSError as err:  # gone since is_file() (a save renaming the directory), unreadable
        raise ArtifactError(f"{file}: cannot be read ({err.strerror or err}). Fix: if a save "
                            "was replacing it, load it again once the save is done; else "
                            "make it readable.") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version is None or isinstance(version, bool) or not isinstance(version, int):
        what = "no 'format_version'" if isinstance(raw, dict) else f"a JSON {type(raw).__name__}"
        raise ArtifactError(f"{file}: not a funcformer manifest ({what}, where an object with "
                            "format_version, task and labels belongs). The artifact is damaged "
                            "or was edited by hand; save it again.")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{file}: format version {version!r} was written by funcformer "
            f"{raw.get('library_version', '?') if isinstance(raw, dict) else '?'}; this is "
            f"funcformer {__version__}, which reads format {FORMAT_VERSION} and older. "
            "Fix: pip install -U funcformer.")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{file}: field '{field}': {first['msg']}. The artifact is damaged "
                            "or was edited by hand; save it again.") from None


def check_plain_files(directory: Path, error: type[FuncformerError] = ArtifactError,
                      contained: bool = False) -> None:
    """Every entry under `directory` is a file or a folder: reading a pipe (a FIFO named
    like one of its files), a socket or a device never ends, and a server loading it would
    hang, holding its loading lock. A broken link is left to the reader of that file.
    `contained` (a function's folder): no link may lead out of it, for its files would then
    be another file of this machine's, read (and shown in errors) as the function's own; a
    backbone in the Hugging Face cache links to blobs elsewhere, as it should."""
    root = directory.resolve() if contained else None
    for entry in directory.rglob("*"):
        try:
            mode = entry.stat().st_mode
        except OSError:
            continue
        if root is not None and entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise error(f"{entry}: a link to {entry.resolve()}, outside the function; "
                        "funcformer never writes one, and reading through it would read "
                        "another file of this machine as the function's. Fix: put the file "
                        "itself there, or copy the function again from its source.")
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise error(f"{entry}: not a regular file (a pipe, socket or device), which no "
                        "funcformer writes; reading it could block for ever. Fix: remove it, "
                        "or copy the function again from its source.")


def check_weights(directory: Path, error: type[FuncformerError] = ArtifactError,
                  fix: str = DAMAGED_FIX) -> None:
    """Read the header of every safetensors file under `directory` (not the tensors, so it is
    cheap): `error` naming the file when one cannot be read, e.g. cut short by a failed copy.
    Without it the loaders fail deep inside transformers or torch with no file named."""
    from safetensors import safe_open

    check_plain_files(directory, error)
    for file in sorted(directory.rglob("*.safetensors")):
        try:
            with safe_open(str(file), "numpy") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own error types, OSError, ...
            raise error(f"{file}: cannot be read ({str(err)[:200]}); the file is damaged or "
                        f"was cut short. {fix}") from None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False)
    (directory / MANIFEST).write_text(text + "\n", encoding="utf-8")


def function_folders(directory: Path) -> list[Path]:
    """The function artifacts directly under `directory`, by name: folders holding a
    funcformer.json, hidden ones skipped (saves in progress). OSError if it cannot be read."""
    return [Path(entry.path) for entry in sorted(os.scandir(directory), key=lambda e: e.name)
            if not entry.name.startswith(".") and entry.is_dir()
            and (Path(entry.path) / MANIFEST).is_file()]


@contextlib.contextmanager
def atomic_directory(target: Path, graph_of: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `target` in one rename.

    Refuses to replace a non-empty directory that is not a funcformer artifact. `target`'s
    ONNX export is kept when it still holds for the new copy (see `_keep_export`).
    """
    target = check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    temp = target.parent / f".{target.name}.tmp-{tag}"
    temp.mkdir()
    try:
        yield temp
        record_files(temp)
        _keep_export(target, temp, graph_of)
        even_modes(temp, temp / MANIFEST)  # a carried export too (made 0600 before)
        _fsync_tree(temp)
        _swap_in(temp, target, target.parent / f".{target.name}.old-{tag}")
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _keep_export(target: Path, temp: Path, graph_of: str | None = None) -> None:
    """Carry `target`'s ONNX export into the new copy `temp` when it still holds: exported from
    the function being saved (the same digest), or, for a new version, recording the same
    `graph_of` (what its graphs compute: a zero-shot function's are its backbone's, so a new
    threshold leaves them valid), whose record then vouches for the new digest. Saving
    dropped the graphs, which `load(runtime="onnx")` needs and an ONNX-only host cannot make
    again. Files are hard-linked where possible (a graph is about 90 MB); a later export
    replaces them by rename, never in place."""
    record_path = target / ONNX_DIR / EXPORT_RECORD
    try:
        record = json.loads(record_path.read_text("utf-8"))
        digest = json.loads((temp / MANIFEST).read_text("utf-8")).get("digest")
    except (OSError, ValueError, AttributeError):  # no export, or no manifest written
        return
    if not isinstance(record, dict) or digest is None:
        return
    same = record.get("digest") == digest
    if not same and (graph_of is None or record.get("graph_of") != graph_of):
        return
    if any(entry.is_symlink() for entry in (target / ONNX_DIR).rglob("*")):
        return  # no funcformer export holds a link: not carried, not written again
    shutil.copytree(target / ONNX_DIR, temp / ONNX_DIR, copy_function=_link_or_copy)
    if not same:  # a new file, not a write through the hard link into target's record
        stamped = temp / ONNX_DIR / f".{EXPORT_RECORD}.tmp-{uuid.uuid4().hex[:8]}"
        stamped.write_text(json.dumps({**record, "digest": digest}, indent=2) + "\n", "utf-8")
        os.replace(stamped, temp / ONNX_DIR / EXPORT_RECORD)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, destination)


def _swap_in(temp: Path, target: Path, old: Path) -> None:
    """Rename `temp` to `target`, moving a `target` already there aside to `old` first.

    Another save of the same path (another thread or process) may move `target` away or put
    its own there between these two renames (two saves at once raised FileNotFoundError or
    "Directory not empty" and left a stray old copy): then move that aside too and try again,
    so the last save wins.
    """
    for _ in range(SWAP_ATTEMPTS):
        with contextlib.suppress(FileNotFoundError):  # none yet, or moved by another save
            os.replace(target, old)
        try:
            os.replace(temp, target)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                _put_back(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)  # another save's newer copy is there now
            continue
        except BaseException:  # Ctrl-C between the renames: the old copy was deleted too
            _put_back(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    raise ArtifactError(f"{target}: saved by something else {SWAP_ATTEMPTS} times while this save "
                        "replaced it. Fix: save each function to its own directory, or one at a "
                        "time.")


SWAP_ATTEMPTS = 100


def _put_back(old: Path, target: Path) -> None:
    """The copy moved aside to `old` goes back to `target`, if nothing took its place (else it
    stays as `old`): a save that fails leaves the previous artifact."""
    with contextlib.suppress(OSError):
        os.replace(old, target)


def record_files(directory: Path) -> None:
    """Write the sha256 of every file beside funcformer.json into it (`Manifest.files`);
    nothing for a directory without one (a report, map's parts)."""
    file = directory / MANIFEST
    if not file.is_file():
        return
    raw = json.loads(file.read_text("utf-8"))
    raw["files"] = {path.relative_to(directory).as_posix(): file_sha256(path)
                    for path in sorted(directory.rglob("*"))
                    if path.is_file() and path != file}
    file.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_files(directory: Path, manifest: Manifest) -> None:
    """An ArtifactError naming the first file of `manifest.files` that is missing or not
    the one saved (files added since, such as an ONNX export, are not in the record)."""
    root = directory.resolve()
    for name, saved in manifest.files.items():
        path = (directory / name).resolve()
        if root not in path.parents:  # a hand-made record naming ../x: read nothing there
            raise ArtifactError(f"{directory / MANIFEST}: 'files' names {name!r}, outside the "
                                f"function directory. {DAMAGED_FIX}")
        if not path.is_file():
            raise ArtifactError(f"{directory / name}: missing; it was saved with the "
                                f"function. {DAMAGED_FIX}")
        if file_sha256(path) != saved:
            raise ArtifactError(
                f"{directory / name}: not the file saved with this function (its sha256 "
                "differs from the one funcformer.json records): the function's digest, which "
                "caches and servers key results by, would vouch for other weights. Fix: put "
                "back the saved file, or load the function it came from and save that.")


def function_home(path: Any) -> Path | None:
    """The function directory `path` lies inside (a parent holding funcformer.json), if any:
    an output written there changes that artifact, and a server watching the folder takes it
    up."""
    return next((d for d in Path(path).resolve().parents if (d / MANIFEST).is_file()), None)


def check_target(target: Path) -> Path:
    """The absolute path to save to, or an ArtifactError if saving there would destroy data
    or cannot be done (a directory that cannot be created or written: said before training,
    not after)."""
    target = Path(target).absolute()
    if target.exists() and not _replaceable(target):
        raise ArtifactError(f"{target} exists and is not a funcformer function; refusing to "
                            "overwrite it. Fix: choose a new or empty --out directory.")
    check_writable(target.parent, str(target))
    return target


def check_writable(directory: str | os.PathLike[str], what: str,
                   error: type[FuncformerError] = ArtifactError) -> None:
    """Raise `error` (naming `what`) unless `directory` exists or can be created, and takes
    new files: its nearest existing ancestor must be a directory where a probe directory can
    be made (and is removed at once)."""
    path = Path(directory).absolute()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise error(f"{what}: {ancestor} is a file, so no directory can be made there. Fix: "
                    "choose another path.")
    try:
        probe = tempfile.mkdtemp(prefix=".funcformer-probe-", dir=ancestor)
    except OSError as err:
        raise error(f"{what}: cannot write in {ancestor} ({err.strerror or err}). Fix: choose "
                    "a directory you can write to.") from None
    os.rmdir(probe)


def _replaceable(target: Path) -> bool:
    try:  # one listing: another save of this path may swap the directory between two looks
        with os.scandir(target) as listing:
            entries = list(listing)
    except FileNotFoundError:  # moved away meanwhile by another save
        return True
    except NotADirectoryError:  # a file
        return False
    except OSError as err:
        raise ArtifactError(f"{target}: cannot be read ({err.strerror or err}), so whether it "
                            "holds a function is unknown. Fix: make it readable, or choose "
                            "another directory.") from None
    return not entries or any(e.name == MANIFEST and e.is_file() for e in entries)


def even_modes(root: Path, reference: Path) -> None:
    """Give every file under `root` the permissions of `reference`, a file written with
    open() (so by the umask's rule, 0644 under the usual 022). safetensors' save_file and
    temporary files write 0600: a function trained by one user could not be served by
    another, or from a container running as another user."""
    try:
        mode = reference.stat().st_mode & 0o777
    except OSError:  # nothing written there: leave the modes as they are
        return
    for file in root.rglob("*"):
        if file.is_file() and not file.is_symlink() and file.stat().st_mode & 0o777 != mode:
            with contextlib.suppress(PermissionError):  # a carried export another user owns
                os.chmod(file, mode)


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def save_encoder(encoder: Any, tokenizer: Any, source: Path, directory: Path) -> None:
    """Write a fine-tuned encoder, its tokenizer and the pooling files of `source` (safetensors)."""
    save_model(encoder, directory)
    tokenizer.save_pretrained(directory)
    copy_pooling_files(source, directory)


def save_model(model: Any, directory: Path) -> None:
    """`model.save_pretrained` in float32, as every artifact holds its weights: a function
    loaded with dtype="bfloat16" or "float16" saves a float32 copy (of the rounded weights)."""
    import copy

    from ._backbone import quiet_transformers

    if any(p.dtype in _half_dtypes() for p in model.parameters()):
        model = copy.deepcopy(model).float()  # a copy: the loaded model may be serving calls
    with quiet_transformers():
        model.save_pretrained(directory)  # safetensors: the only format in 5.x


def float32_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict ready for safetensors' save_file: detached, on the CPU, contiguous, and
    float32 where a half-precision load (dtype="bfloat16"/"float16") holds it in half."""
    half = _half_dtypes()
    return {k: (v.float() if v.dtype in half else v).detach().cpu().contiguous()
            for k, v in state.items()}


def _half_dtypes() -> tuple[Any, ...]:
    import torch

    return (torch.bfloat16, torch.float16)


def copy_pooling_files(source: Path, destination: Path) -> None:
    """Copy the sentence-transformers pooling/length files that exist in `source`. From a
    function's own folder (its encoder/), a link leading out of that function is refused:
    the copy would carry a file of the machine's into the new artifact, readable by all (a
    backbone in the Hugging Face cache links its files to blobs elsewhere, as it should)."""
    home = source.parent if (source.parent / MANIFEST).is_file() else None
    for name in POOLING_FILES:
        if not (source / name).is_file():
            continue
        if home is not None and not (source / name).resolve().is_relative_to(home.resolve()):
            raise ArtifactError(f"{source / name}: a link to {(source / name).resolve()}, "
                                f"outside the function {home}; saving or exporting it would "
                                f"copy that file into the new artifact. Fix: remove the link "
                                f"(rm {source / name}), or copy the function again from its "
                                "source.")
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, destination / name)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Any]:
    """Open a temporary text file beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
