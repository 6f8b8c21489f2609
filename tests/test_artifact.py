"""Artifacts: exact file sets, identical predictions after a round trip, atomic writes,
version and digest checks, and no pickle anywhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import ArtifactError, _artifact

TEXTS = ["the food was great", "the staff were rude", "the room was slow and dirty"]


@pytest.fixture(scope="module")
def trained(tiny_backbone: Path) -> dict[str, funcformer.Function]:
    from conftest import make_reviews

    return {m: funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method=m,
                                epochs=2, progress=False) for m in ("head", "full")}


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_head_artifact_file_set_and_round_trip(trained: dict, tmp_path: Path) -> None:
    fn = trained["head"]
    out = fn.save(tmp_path / "fn")
    assert _files(out) == {"funcformer.json", "head.safetensors"}
    loaded = funcformer.load(out)
    assert torch.equal(loaded.logits(TEXTS), fn.logits(TEXTS))
    assert loaded(TEXTS) == fn(TEXTS)
    assert loaded.digest == fn.digest


def test_full_artifact_file_set_and_round_trip(trained: dict, tmp_path: Path) -> None:
    fn = trained["full"]
    out = fn.save(tmp_path / "fn")
    assert _files(out) == {"funcformer.json", "head.safetensors", "encoder/config.json",
                           "encoder/model.safetensors", "encoder/tokenizer.json",
                           "encoder/tokenizer_config.json"}
    loaded = funcformer.load(out)
    torch.testing.assert_close(loaded.logits(TEXTS), fn.logits(TEXTS), rtol=0, atol=1e-6)
    assert [p.label for p in loaded(TEXTS)] == [p.label for p in fn(TEXTS)]


def _stored_dtypes(directory: Path) -> set[str]:
    from safetensors import safe_open

    found: set[str] = set()
    for file in directory.rglob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            names = handle.keys()
            found |= {str(handle.get_slice(name).get_dtype()) for name in names}
    return found


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_function_loaded_in_half_precision_saves_float32_weights(
        trained: dict, tiny_backbone: Path, tmp_path: Path, dtype: str) -> None:
    """A full encoder, a LoRA adapter and a pair head (cast to the encoder's dtype on load)
    were written as loaded: bfloat16/float16 files in an artifact that is float32 otherwise."""
    from conftest import make_reviews
    from test_pair import make_pairs

    functions = {
        "full": trained["full"],
        "lora": funcformer.train("classify", make_reviews(6), backbone=tiny_backbone,
                                 method="lora", epochs=1, progress=False),
        "pair": funcformer.train("pair", make_pairs(12), backbone=tiny_backbone, method="head",
                                 epochs=1, progress=False)}
    for name, fn in functions.items():
        half = funcformer.load(fn.save(tmp_path / name), dtype=dtype)
        out = half.save(tmp_path / f"{name}-again")
        assert _stored_dtypes(out) == {"F32"}, name
        assert next(half.backbone.model.parameters()).dtype == getattr(torch, dtype)  # as loaded
        again = funcformer.load(out)
        assert next(again.backbone.model.parameters()).dtype == torch.float32
    config = json.loads((tmp_path / "full-again" / "encoder" / "config.json").read_text())
    assert config["dtype"] == "float32"


def test_manifest_records_what_was_built(trained: dict, tmp_path: Path,
                                         tiny_backbone: Path) -> None:
    out = trained["head"].save(tmp_path / "fn")
    manifest = json.loads((out / "funcformer.json").read_text())
    assert manifest["format_version"] == _artifact.FORMAT_VERSION
    assert manifest["task"] == "classify" and manifest["method"] == "head"
    assert manifest["labels"] == ["negative", "positive"]
    assert manifest["backbone"]["name"] == str(tiny_backbone)
    assert manifest["backbone"]["digest"].startswith("sha256:")
    assert manifest["library_version"] == funcformer.__version__
    assert manifest["config"]["epochs"] == 2 and manifest["config"]["seed"] == 42
    assert {"created_at", "metrics", "training", "digest"} <= set(manifest)


def test_no_pickle_is_written_or_read(trained: dict, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = trained["full"].save(tmp_path / "fn")
    assert not [f for f in _files(out) if f.endswith((".bin", ".pt", ".pkl", ".pickle"))]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", forbidden)
    funcformer.load(out)(TEXTS)


def test_interrupted_save_leaves_nothing_loadable(trained: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "fn"

    def crash(directory: Path, manifest: object) -> None:
        (directory / "funcformer.json").write_text("{")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr("funcformer._function.write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        trained["head"].save(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temp directory left behind


def test_failed_overwrite_keeps_the_previous_artifact(trained: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = trained["head"].save(tmp_path / "fn")
    before = (target / "funcformer.json").read_text()
    monkeypatch.setattr("funcformer._function.write_manifest",
                        lambda d, m: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        trained["full"].save(target)
    assert (target / "funcformer.json").read_text() == before
    assert funcformer.load(target).manifest.method == "head"


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"),
                                   KeyboardInterrupt()])
def test_a_save_failing_between_its_renames_keeps_the_previous_artifact(
        trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        error: BaseException) -> None:
    """The copy moved aside was deleted whatever failed, and the new one with it: nothing
    was left at the target."""
    import os

    target = trained["head"].save(tmp_path / "fn")
    real, calls = os.replace, []

    def second_fails(source: object, destination: object) -> None:
        calls.append(source)
        if len(calls) == 2:  # old copy moved aside, new one not yet in
            raise error
        real(source, destination)

    monkeypatch.setattr(_artifact.os, "replace", second_fails)
    with pytest.raises(type(error)):
        trained["full"].save(target)
    monkeypatch.setattr(_artifact.os, "replace", real)
    assert funcformer.load(target).manifest.method == "head"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fn"]


def test_what_a_save_may_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder holding a *folder* named funcformer.json was taken for a function (and would
    be deleted); an unreadable one was said to be 'not a funcformer function'."""
    mine = tmp_path / "mine"
    (mine / "funcformer.json").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep", "utf-8")
    with pytest.raises(ArtifactError, match="exists and is not a funcformer function"):
        _artifact.check_target(mine)
    (tmp_path / "file").write_text("x", "utf-8")
    with pytest.raises(ArtifactError, match="exists and is not a funcformer function"):
        _artifact.check_target(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert _artifact.check_target(tmp_path / "empty") == tmp_path / "empty"

    def denied(path: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_artifact.os, "scandir", denied)
    with pytest.raises(ArtifactError, match=r"cannot be read \(Permission denied\).*Fix"):
        _artifact.check_target(mine)


def test_save_in_place_replaces_and_reloads_fresh(trained: dict, tmp_path: Path) -> None:
    target = tmp_path / "fn"
    trained["full"].save(target)
    first = funcformer.load(target).logits(TEXTS)
    from conftest import make_reviews

    other = funcformer.train("classify", make_reviews(seed=9), method="full", epochs=1, seed=7,
                             backbone=trained["full"].backbone.path, progress=False)
    other.save(target)
    second = funcformer.load(target)
    assert second.digest == other.digest
    assert not torch.equal(second.logits(TEXTS), first)


def test_refuses_to_overwrite_a_directory_that_is_not_an_artifact(trained: dict,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        trained["head"].save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_newer_format_version_is_refused(trained: dict, tmp_path: Path) -> None:
    out = trained["head"].save(tmp_path / "fn")
    manifest = json.loads((out / "funcformer.json").read_text())
    manifest["format_version"] = 999
    (out / "funcformer.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"format version 999.*pip install -U funcformer\."):
        funcformer.load(out)


@pytest.mark.parametrize(("manifest", "what"), [([1, 2, 3], "a JSON list"),
                                                ({"task": "classify"}, "no 'format_version'")])
def test_a_manifest_of_the_wrong_shape_says_so(trained: dict, tmp_path: Path, manifest: object,
                                                what: str) -> None:
    """It said 'format version None was written by funcformer ?... pip install -U'."""
    out = trained["head"].save(tmp_path / "fn")
    (out / "funcformer.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"not a funcformer manifest \({what},.*save it"):
        funcformer.load(out)


def test_a_manifest_gone_while_it_is_read_is_an_artifact_error(
        trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a save renames the directory away between the check and the read: FileNotFoundError
    trained["head"].save(tmp_path / "fn")

    def vanished(self: Path, *args: object, **kwargs: object) -> str:
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "read_text", vanished)
    with pytest.raises(ArtifactError, match=r"funcformer\.json: cannot be read .*load it again"):
        funcformer.load(tmp_path / "fn")


def test_damaged_manifest_and_head(trained: dict, tmp_path: Path) -> None:
    out = trained["head"].save(tmp_path / "fn")
    (out / "head.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="cannot load the head weights"):
        funcformer.load(out)
    (out / "funcformer.json").write_text('{"format_version": 1, "task": "classify"}')
    with pytest.raises(ArtifactError, match="field 'method'"):
        funcformer.load(out)
    with pytest.raises(ArtifactError, match=r"not a function but a folder of functions \(fn\)"):
        funcformer.load(tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match=r"no funcformer\.json"):
        funcformer.load(tmp_path / "plain")
    with pytest.raises(ArtifactError, match="no such directory"):
        funcformer.load(tmp_path / "missing")
    with pytest.raises(ArtifactError, match=r"funcformer\.json is a file, not a function "
                                           r"directory\. Fix: pass the directory"):
        funcformer.load(out / "funcformer.json")  # was "no such directory"


def test_backbone_digest_mismatch_is_caught(trained: dict, tmp_path: Path,
                                            tiny_backbone: Path) -> None:
    other = tmp_path / "other-backbone"
    shutil.copytree(tiny_backbone, other)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(other / "model.safetensors"))
    weights = {k: v + 0.01 for k, v in weights.items()}
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    out = trained["head"].save(tmp_path / "fn")
    with pytest.raises(ArtifactError, match="digest"):
        funcformer.load(out, backbone=other)
    assert funcformer.load(out, backbone=tiny_backbone)(TEXTS) == trained["head"](TEXTS)


def _damage(out: Path, name: str, how: str) -> None:
    file = out / name
    if how == "cut":
        with open(file, "r+b") as handle:
            handle.truncate(1000)
    elif how == "empty json":
        file.write_text("{}")
    else:
        file.unlink()


@pytest.mark.parametrize(("method", "name", "how", "message"), [
    ("full", "encoder/model.safetensors", "cut", r"model\.safetensors: cannot be read"),
    ("head", "head.safetensors", "cut", r"head\.safetensors: cannot load the head weights"),
    ("full", "encoder/tokenizer.json", "empty json", r"encoder: the tokenizer cannot be loaded"),
    ("full", "encoder/tokenizer.json", "delete", r"encoder: the tokenizer has 5 tokens"),
])
def test_a_damaged_file_of_the_artifact_is_an_artifact_error(
        trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str,
        name: str, how: str, message: str) -> None:
    """A cut safetensors file and an unreadable tokenizer were internal errors; a deleted
    tokenizer.json loaded a 5-token vocabulary, so every word became [UNK] (exit 0)."""
    from conftest import run_cli

    out = trained[method].save(tmp_path / "fn")
    _damage(out, name, how)
    with pytest.raises(ArtifactError, match=message) as info:
        funcformer.load(out)
    assert str(info.value).endswith("or retrain it.") and "Fix: " in str(info.value)
    assert run_cli("predict", out, "great") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "internal error" not in err


def test_a_damaged_generate_model_is_an_artifact_error(tmp_path: Path) -> None:
    """A cut model/model.safetensors was an internal SafetensorError naming no file."""
    from test_generate import PAIRS, write_tiny_lm

    fn = funcformer.train("generate", PAIRS, backbone=write_tiny_lm(tmp_path / "lm"),
                          method="full", epochs=1, progress=False)
    out = fn.save(tmp_path / "fn")
    _damage(out, "model/model.safetensors", "cut")
    with pytest.raises(ArtifactError, match=r"model\.safetensors: cannot be read.*retrain it"):
        funcformer.load(out)


def test_labels_edited_to_disagree_with_the_head_are_refused(trained: dict,
                                                            tmp_path: Path) -> None:
    """Three labels over a two-output head failed in zip() at the first prediction."""
    out = trained["head"].save(tmp_path / "fn")
    manifest = json.loads((out / "funcformer.json").read_text())
    manifest["labels"] = ["negative", "positive", "neutral"]
    (out / "funcformer.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"3 labels .* 2 outputs.*Fix: "):
        funcformer.load(out)


def test_a_file_swapped_since_the_save_is_refused(trained: dict, tiny_backbone: Path,
                                                  tmp_path: Path) -> None:
    """load trusted the manifest's digest: a head.safetensors copied in from another
    function ran under this one's digest, so a shared result cache answered with the other
    function's results."""
    from conftest import make_reviews

    out = trained["full"].save(tmp_path / "fn")
    manifest = json.loads((out / "funcformer.json").read_text("utf-8"))
    assert set(manifest["files"]) == _files(out) - {"funcformer.json"}
    other = funcformer.train("classify", make_reviews(seed=9), backbone=tiny_backbone,
                             method="head", epochs=2, progress=False).save(tmp_path / "other")
    saved = (out / "head.safetensors").read_bytes()
    shutil.copy(other / "head.safetensors", out / "head.safetensors")
    with pytest.raises(ArtifactError, match=r"head\.safetensors: not the file saved with this "
                                            r"function .*Fix: put back the saved file"):
        funcformer.load(out)
    (out / "head.safetensors").write_bytes(saved)
    (out / "encoder" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer\.json"):
        funcformer.load(out)
    out = trained["head"].save(tmp_path / "fn")  # added later (an ONNX export): not recorded
    (out / "notes.txt").write_text("mine", "utf-8")
    assert funcformer.load(out).digest == trained["head"].digest
    manifest = json.loads((out / "funcformer.json").read_text("utf-8"))
    for files in ({"../other/head.safetensors": "sha256:0"}, {}):  # hand-made; a save before
        (out / "funcformer.json").write_text(json.dumps({**manifest, "files": files}), "utf-8")
        if files:
            with pytest.raises(ArtifactError, match="outside the function directory"):
                funcformer.load(out)
        else:
            assert funcformer.load(out).digest == trained["head"].digest


def test_a_save_finishing_mid_load_loads_the_new_function(
        trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save replacing the directory while load read it paired one save's manifest with
    the other's files: an ArtifactError calling the new files 'not the file saved'."""
    from funcformer import _function

    out = trained["full"].save(tmp_path / "fn")
    real, saves = _function._load, [trained["head"], trained["full"]]

    def racing(*args: object, **kwargs: object) -> funcformer.Function:
        fn = real(*args, **kwargs)
        if saves:  # the next save lands between the loaders and the file check
            saves.pop(0).save(out)
        return fn

    monkeypatch.setattr(_function, "_load", racing)
    loaded = funcformer.load(out)  # read the full one, then the head one, then the full one
    assert loaded.digest == trained["full"].digest and not saves
    assert torch.equal(loaded.logits(TEXTS), trained["full"].logits(TEXTS))
    saves.extend([trained["head"], trained["full"], trained["head"]])
    with pytest.raises(ArtifactError, match=r"saved again 3 times while it was loading"):
        funcformer.load(out)
    # the same function saved again writes the same manifest: the load raced it all the same
    saves.clear()
    monkeypatch.setattr(_function, "_load", real)
    head = funcformer.load(out)
    calls = []

    def resaved_mid_load(*args: object, **kwargs: object) -> funcformer.Function:
        if not calls:
            calls.append(1)
            shutil.rmtree(out / "encoder", ignore_errors=True)  # not in this save's files
            (out / "head.safetensors").unlink()  # as if read between the two renames...
            head.save(out)  # ...of a save of the same function, then complete again
            raise ArtifactError(f"{out}: head.safetensors is missing.")
        return real(*args, **kwargs)

    monkeypatch.setattr(_function, "_load", resaved_mid_load)
    assert funcformer.load(out).digest == head.digest


def test_every_file_of_an_artifact_and_its_export_has_the_umask_mode(
        tiny_backbone: Path, tmp_path: Path) -> None:
    """safetensors' save_file wrote head.safetensors and the encoder's weights 0600 (the rest
    0644 under umask 022): a function trained by one user could not be served by another."""
    import stat

    from conftest import make_reviews

    previous = os.umask(0o022)
    try:
        fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                              progress=False, method="full")
        out = fn.save(tmp_path / "fn")
        pytest.importorskip("onnxruntime")
        fn.export_onnx(out, int8=True)
    finally:
        os.umask(previous)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in out.rglob("*") if p.is_file()}
    assert "head.safetensors" in modes and "onnx/model-int8.onnx" in modes
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.timeout(60, method="thread")  # a blocked open() ignores signals
@pytest.mark.parametrize("name", ["extra.safetensors", "encoder/tokenizer.json"])
def test_a_pipe_in_a_function_folder_is_refused_not_read(trained: dict, tmp_path: Path,
                                                         name: str) -> None:
    """Reading a FIFO never ends: a folder holding one hung load, predict and a server
    (every load holds one lock), which only kill -9 stopped."""
    saved = trained["full"].save(tmp_path / "fn")
    (saved / name).unlink(missing_ok=True)
    os.mkfifo(saved / name)
    with pytest.raises(ArtifactError, match=rf"{name}: not a regular file .*Fix: remove it"):
        funcformer.load(saved)
    with pytest.raises(ArtifactError, match="not a regular file"):
        _artifact.read_manifest(saved)


@pytest.mark.timeout(60, method="thread")  # a blocked open() ignores signals
def test_a_pipe_named_funcformer_json_is_refused_not_read(trained: dict, tmp_path: Path) -> None:
    """load hashed the manifest (to notice a save landing mid-load) before any check: a FIFO
    in its place blocked it for ever."""
    saved = trained["head"].save(tmp_path / "fn")
    (saved / "funcformer.json").unlink()
    os.mkfifo(saved / "funcformer.json")
    with pytest.raises(ArtifactError, match=r"funcformer.json: not a regular file"):
        funcformer.load(saved)


@pytest.mark.parametrize("how", ["save", "export"])
def test_a_link_out_of_the_function_is_not_copied_into_a_new_artifact(
        trained: dict, tmp_path: Path, how: str) -> None:
    """The pooling files of a function's encoder/ are copied on save and export: through a
    link, a private file of the machine's landed in the new artifact, readable by all."""
    if how == "export":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE KEY", "utf-8")
    secret.chmod(0o600)
    saved = trained["full"].save(tmp_path / "fn")
    fn = funcformer.load(saved)  # the link comes after the load, which would refuse it
    (saved / "encoder/1_Pooling").mkdir(exist_ok=True)
    (saved / "encoder/1_Pooling/config.json").unlink(missing_ok=True)
    (saved / "encoder/1_Pooling/config.json").symlink_to(secret)
    target = tmp_path / "copy"
    with pytest.raises(ArtifactError, match=r"1_Pooling/config.json: a link to .*secret.txt, "
                       r"outside the function"):
        fn.save(target) if how == "save" else fn.export_onnx(saved)
    assert not any("PRIVATE" in p.read_text("utf-8", errors="replace")
                   for root in (target, saved / "onnx") if root.exists()
                   for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_link_out_of_the_function_folder_is_refused_on_load(trained: dict,
                                                              tmp_path: Path) -> None:
    """A link leading out of the function made load read another file of the machine as the
    function's (its parse errors quoted in messages, and on a server in GET /v1/functions);
    links inside the folder, and a function folder that is itself a link, still load."""
    saved = trained["full"].save(tmp_path / "real")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}", "utf-8")
    alias = tmp_path / "alias"
    alias.symlink_to(saved)
    assert funcformer.load(alias).labels == trained["full"].labels
    (saved / "notes.txt").write_text("mine", "utf-8")
    (saved / "inside").symlink_to(saved / "notes.txt")
    assert funcformer.load(saved).labels == trained["full"].labels
    (saved / "encoder/extra.json").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match=r"encoder/extra.json: a link to .*elsewhere.json, "
                       r"outside the function"):
        funcformer.load(saved)
