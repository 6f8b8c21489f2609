"""Checkpoints and resume: a run killed mid-way (SIGKILL) resumes to the same weights."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import funcformer
from funcformer import TaskError

ROOT = Path(__file__).parent

TRAIN = dict(method="full", epochs=2, batch_size=8, progress=False, seed=3)
LOUD = {**TRAIN, "progress": True}


def _rows() -> list[tuple[str, str]]:
    from conftest import make_reviews

    return make_reviews(16)


def test_checkpointing_does_not_change_the_result(tiny_backbone: Path, tmp_path: Path) -> None:
    plain = funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN)
    saved = funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN,
                             checkpoint_dir=str(tmp_path / "ck"), checkpoint_steps=1)
    assert saved.digest == plain.digest
    files = sorted(p.name for p in (tmp_path / "ck" / "checkpoint").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]


def train_until_killed(backbone: Path, checkpoints: Path, train: dict[str, Any]) -> None:
    """Train on `_rows()` with `train` in a subprocess that checkpoints every step and kills
    itself (SIGKILL) right after its 7th checkpoint: 32 rows + 4 label texts in batches of 8
    make 5 steps an epoch (contrastive: 18 same-label pairs, 4 a batch), so epoch 1 saves 5
    step checkpoints and 1 at its end, and the kill comes at epoch 2, step 1."""
    import torch

    # Same thread count as this process: a different one rounds sums differently.
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        import funcformer
        from funcformer import _checkpoint
        from test_checkpoint import _rows

        saves = 0
        original = _checkpoint.save

        def save_then_die(*args, **kwargs):
            global saves
            original(*args, **kwargs)
            saves += 1
            if saves == 7:
                os.kill(os.getpid(), signal.SIGKILL)

        _checkpoint.save = save_then_die
        funcformer.train("classify", _rows(), backbone={str(backbone)!r}, **{train!r},
                         checkpoint_dir={str(checkpoints)!r}, checkpoint_steps=1)
        print("not killed")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


@pytest.mark.parametrize("method", ["full", "lora", "contrastive"])
def test_killed_run_resumes_to_the_same_weights(tiny_backbone: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                method: str) -> None:

    checkpoints = tmp_path / "ck"
    train_until_killed(tiny_backbone, checkpoints, {**TRAIN, "method": method})
    assert (checkpoints / "checkpoint" / "state.json").is_file()
    from funcformer import _checkpoint

    restored = []
    original = _checkpoint.load
    monkeypatch.setattr(_checkpoint, "load", lambda *a, **k: restored.append(
        original(*a, **k)) or restored[-1])
    train = {**TRAIN, "method": method}
    resumed = funcformer.train("classify", _rows(), backbone=tiny_backbone, **train,
                               checkpoint_dir=str(checkpoints), checkpoint_steps=1, resume=True)
    plain = funcformer.train("classify", _rows(), backbone=tiny_backbone, **train)
    state = restored[0][0]
    assert (state["epoch"], state["step"]) == (2, 1)  # it resumed mid-way, not from scratch
    assert resumed.digest == plain.digest
    assert resumed.manifest.training["history"]["epochs"] == (
        plain.manifest.training["history"]["epochs"])


def test_a_checkpoint_of_another_run_is_refused(tiny_backbone: Path, tmp_path: Path) -> None:
    funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN,
                     checkpoint_dir=str(tmp_path))
    other = {**TRAIN, "epochs": 3}
    with pytest.raises(TaskError, match=r"from another training run \(epochs \d+ there, 3 "
                                        r"here\)\. Fix"):
        funcformer.train("classify", _rows(), backbone=tiny_backbone, **other,
                         checkpoint_dir=str(tmp_path), resume=True)


def test_resume_without_a_checkpoint_starts_fresh(tiny_backbone: Path, tmp_path: Path,
                                                  capsys) -> None:
    fresh = funcformer.train("classify", _rows(), backbone=tiny_backbone, **LOUD,
                             checkpoint_dir=str(tmp_path / "none"), resume=True)
    # said, so that a mistyped directory does not silently cost the run done so far
    assert f"no checkpoint in {tmp_path / 'none'} to resume from; training from the start" in \
        capsys.readouterr().err
    plain = funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN)
    assert fresh.digest == plain.digest


def test_head_says_it_writes_no_checkpoints(tiny_backbone: Path, tmp_path: Path,
                                            capsys) -> None:
    funcformer.train("classify", _rows(), backbone=tiny_backbone, **{**LOUD, "method": "head"},
                     checkpoint_dir=str(tmp_path / "ck"), resume=True)
    assert "head: a head on frozen features trains in seconds, so it writes no checkpoints" in \
        capsys.readouterr().err  # it said nothing, and --resume silently did nothing
    assert not (tmp_path / "ck").exists()


def test_a_finished_run_resumes_to_its_end(tiny_backbone: Path, tmp_path: Path,
                                           capsys) -> None:
    first = funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN,
                             checkpoint_dir=str(tmp_path))
    again = funcformer.train("classify", _rows(), backbone=tiny_backbone, **LOUD,
                             checkpoint_dir=str(tmp_path), resume=True)
    assert again.digest == first.digest
    assert re.search(r"resuming from the checkpoint in \S+ \(epoch (\d+) of \1, step (\d+) of "
                     r"\2\)", capsys.readouterr().err)


def test_cli_resume_flags(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    import csv

    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *_rows()])

    from conftest import run_cli as cli

    common = ("train", "classify", data, "--backbone", tiny_backbone, "--method", "full",
              "--epochs", "1", "--seed", "3")
    assert cli(*common, "--out", tmp_path / "a", "--checkpoint-dir", tmp_path / "ck") == 0
    assert (tmp_path / "ck" / "checkpoint" / "state.json").is_file()
    assert cli(*common, "--out", tmp_path / "b", "--checkpoint-dir", tmp_path / "ck",
               "--resume") == 0
    assert funcformer.load(tmp_path / "a").digest == funcformer.load(tmp_path / "b").digest
    capsys.readouterr()
    assert cli(*common, "--out", tmp_path / "c", "--resume") == 1
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err


def test_resumed_tag_and_pair_report_their_eval_metrics(tiny_backbone: Path,
                                                        tmp_path: Path) -> None:
    from test_pair import make_pairs
    from test_tag import toy_rows

    options = dict(backbone=tiny_backbone, progress=False, epochs=2, batch_size=8)
    tag = funcformer.train("tag", toy_rows(24), eval_data=toy_rows(8, seed=1), **options,
                           checkpoint_dir=str(tmp_path / "tag"))
    again = funcformer.train("tag", toy_rows(24), eval_data=toy_rows(8, seed=1), **options,
                             checkpoint_dir=str(tmp_path / "tag"), resume=True)
    assert again.digest == tag.digest and again.metrics == pytest.approx(tag.metrics)
    pair = funcformer.train("pair", make_pairs(24), eval_data=make_pairs(8, seed=1), **options,
                            checkpoint_dir=str(tmp_path / "pair"))
    again = funcformer.train("pair", make_pairs(24), eval_data=make_pairs(8, seed=1), **options,
                             checkpoint_dir=str(tmp_path / "pair"), resume=True)
    assert again.digest == pair.digest and again.metrics == pytest.approx(pair.metrics)


def test_the_saved_function_is_the_best_epoch_head_included(tiny_backbone: Path,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """setfit #526/#425: early stopping must keep the best epoch's encoder *and* head."""
    import torch
    from safetensors.torch import load_file

    from funcformer._methods import full

    scores = iter([0.1, 0.9, 0.5, 0.4])  # baseline, then epochs 1-3: epoch 1 is the best
    monkeypatch.setattr(full, "_evaluator", lambda *a, **k: lambda model: next(scores))
    from conftest import make_reviews

    fn = funcformer.train("classify", _rows(), eval_data=make_reviews(8, seed=1),
                          backbone=tiny_backbone, method="full", epochs=3, patience=5,
                          batch_size=8, progress=False, checkpoint_dir=str(tmp_path))
    assert fn.manifest.training["history"]["best_epoch"] == 1
    best = load_file(str(tmp_path / "checkpoint" / "best.safetensors"))
    last = load_file(str(tmp_path / "checkpoint" / "model.safetensors"))
    assert any(not torch.equal(best[k], last[k]) for k in best)  # epochs 2-3 changed weights
    kept = {**{f"encoder.{k}": v for k, v in fn.encoder.state_dict().items()},
            **{f"head.{k}": v for k, v in fn.head.state_dict().items()}}
    assert {k for k in best if k.startswith("head.")} == {k for k in kept if k.startswith("head.")}
    assert all(torch.equal(kept[k], best[k]) for k in best)
    saved = funcformer.load(fn.save(tmp_path / "fn"))
    assert all(torch.equal(saved.head.state_dict()[k[5:]], best[k]) for k in best
               if k.startswith("head."))


class _Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing in funcformer catches it."""


def _train_killed_at(save: int, monkeypatch: pytest.MonkeyPatch, **train: Any) -> None:
    """Train with `train`, raising `_Killed` right after checkpoint number `save` is written."""
    from funcformer import _checkpoint

    original, saves = _checkpoint.save, []

    def save_then_die(*args: Any, **kwargs: Any) -> Any:
        done = original(*args, **kwargs)
        saves.append(done)
        if len(saves) == save:
            raise _Killed
        return done

    with monkeypatch.context() as patch:
        patch.setattr(_checkpoint, "save", save_then_die)
        with pytest.raises(_Killed):
            funcformer.train("classify", _rows(), **train)


def test_a_checkpoint_at_an_epochs_last_step_resumes_into_its_evaluation(
        tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """32 rows + 4 label texts in batches of 8: 5 steps an epoch. Killed after the step-5
    checkpoint, before epoch 1 was evaluated: the resumed run skipped that evaluation (and
    epoch 1's record), so it could keep another epoch than an uninterrupted run."""
    from conftest import make_reviews

    train = {**TRAIN, "backbone": tiny_backbone, "eval_data": make_reviews(4, seed=1),
             "checkpoint_dir": str(tmp_path), "checkpoint_steps": 1}
    _train_killed_at(5, monkeypatch, **train)
    resumed = funcformer.train("classify", _rows(), **train, resume=True)
    plain = funcformer.train("classify", _rows(), **{**train, "checkpoint_dir": None,
                                                     "checkpoint_steps": None})
    assert [r["epoch"] for r in resumed.manifest.training["history"]["epochs"]] == [0, 1, 2]
    assert resumed.manifest.training["history"] == plain.manifest.training["history"]
    assert resumed.digest == plain.digest


@pytest.mark.parametrize(("damage", "named"), [
    (lambda c: (c / "state.json").write_text('{"fingerprint": {', "utf-8"), "state.json"),
    (lambda c: (c / "state.json").write_text("[]", "utf-8"), "state.json: not a record"),
    (lambda c: (c / "model.safetensors").unlink(), "model.safetensors: missing"),
    (lambda c: (c / "optimizer.safetensors").write_bytes(b"\0" * 9), "optimizer.safetensors"),
    (lambda c: (c / "best.safetensors").write_bytes(b"xx"), "best.safetensors")])
def test_a_damaged_checkpoint_is_refused_and_nothing_is_changed(tiny_backbone: Path,
                                                                tmp_path: Path, damage: Any,
                                                                named: str,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A checkpoint cut short or missing a file was a JSONDecodeError, SafetensorError or
    FileNotFoundError traceback (the CLI: "internal error"); the RNG state was set before the
    best weights failed to load."""
    import torch
    from conftest import make_reviews

    train = {**TRAIN, "backbone": tiny_backbone, "eval_data": make_reviews(4, seed=1),
             "checkpoint_dir": str(tmp_path)}
    funcformer.train("classify", _rows(), **train)
    damage(tmp_path / "checkpoint")
    applied: list[Any] = []
    monkeypatch.setattr(torch, "set_rng_state", applied.append)
    with pytest.raises(TaskError, match=rf"checkpoint is damaged \({re.escape(named)}.*\)\. Fix: "
                                        "delete .*checkpoint and train again"):
        funcformer.train("classify", _rows(), **train, resume=True)
    assert applied == []


def test_resume_with_other_data_or_options_is_refused(tiny_backbone: Path,
                                                      tmp_path: Path) -> None:
    """Only the epochs, seed, optimizer, schedule, steps and weight shapes were compared:
    other texts of the same count, or another learning rate or LoRA alpha, resumed silently
    into a result of neither run (docs/cli.md: other data or options are refused)."""
    from conftest import make_reviews

    train = {**TRAIN, "method": "lora", "backbone": tiny_backbone,
             "checkpoint_dir": str(tmp_path)}
    first = funcformer.train("classify", _rows(), **train)
    other = [(text.replace("the ", "a "), label) for text, label in make_reviews(16, seed=7)]
    with pytest.raises(TaskError, match=r"another training run \(the training data differs\)"):
        funcformer.train("classify", other, **train, resume=True)
    with pytest.raises(TaskError, match=r"\(learning_rate 0\.0005 there, 0\.01 here\)\. Fix"):
        funcformer.train("classify", _rows(), **train, learning_rate=0.01, resume=True)
    with pytest.raises(TaskError, match=r"\(lora\.alpha 16 there, 64 here\)"):
        funcformer.train("classify", _rows(), **train, lora={"alpha": 64}, resume=True)
    # the defaults given explicitly, another checkpoint interval: the same run
    again = funcformer.train("classify", _rows(), **train, lora={"r": 8}, checkpoint_steps=2,
                             resume=True)
    assert again.digest == first.digest


def test_resume_with_other_eval_data_is_refused(tiny_backbone: Path, tmp_path: Path) -> None:
    """The eval data picks the kept epoch: resumed with other eval data, the killed run's
    epochs and the resumed run's were ranked on two data sets, a result of neither run
    (docs/cli.md said the eval data was not compared). The same rows in another file resume."""
    from conftest import make_reviews

    def write(name: str, rows: list[tuple[str, str]]) -> str:
        path = tmp_path / name
        path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), "utf-8")
        return str(path)

    rows = make_reviews(6, seed=11)
    given, copy = write("eval.csv", rows), write("copy.csv", rows)
    train = {**TRAIN, "backbone": tiny_backbone, "checkpoint_dir": str(tmp_path / "ckpt")}
    first = funcformer.train("classify", _rows(), eval_data=given, **train)
    with pytest.raises(TaskError, match=r"another training run \(the eval data differs\)"):
        funcformer.train("classify", _rows(), eval_data=make_reviews(6, seed=12), **train,
                         resume=True)
    with pytest.raises(TaskError, match=r"the eval data differs"):  # a tenth held out instead
        funcformer.train("classify", _rows(), **train, resume=True)
    again = funcformer.train("classify", _rows(), eval_data=copy, **train, resume=True)
    assert again.digest == first.digest


def test_pair_eval_rows_count_by_value_and_search_eval_by_its_documents(
        tiny_backbone: Path, tmp_path: Path) -> None:
    """Review of the eval check: pair eval rows were hashed raw (a CSV's '5.0' against a
    JSONL's 5.0, an unused column, refused the same data; a column named 0 crashed every run
    with eval data), and search's left out the documents its queries are ranked against."""
    import json

    from conftest import NEGATIVE, NOUNS, POSITIVE

    words = list(zip(NOUNS, POSITIVE, NEGATIVE, strict=True))
    pairs = [(f"the {n} was {p}", f"{n} {p}", 1.0) for n, p, _ in words]
    pairs += [(f"the {n} was {q}", f"{n} {p}", 0.0) for n, p, q in words]
    csv_file, jsonl_file = tmp_path / "eval.csv", tmp_path / "eval.jsonl"
    csv_file.write_text("text_a,text_b,score\n" + "".join(f"{a},{b},{s}\n" for a, b, s in
                                                         pairs[:6]), "utf-8")
    jsonl_file.write_text("".join(json.dumps({"text_a": a, "text_b": b, "score": s, "id": i})
                                  + "\n" for i, (a, b, s) in enumerate(pairs[:6])), "utf-8")
    train = {**TRAIN, "backbone": tiny_backbone, "checkpoint_dir": str(tmp_path / "pair")}
    first = funcformer.train("pair", pairs, eval_data=str(csv_file), **train)
    again = funcformer.train("pair", pairs, eval_data=str(jsonl_file), **train, resume=True)
    assert again.digest == first.digest
    numbered = [{"text_a": a, "text_b": b, "score": s, 0: "x"} for a, b, s in pairs[:6]]
    funcformer.train("embed", pairs, eval_data=numbered, backbone=tiny_backbone, epochs=1,
                     progress=False)  # a TypeError sorting the row's keys

    docs = [{"id": n, "text": f"very {p} and {q}"} for n, p, q in words]
    queries = [{"text": f"the {n} was {w}", "id": n} for n in NOUNS for w in ("not", "is")]
    held = [{"text": f"{n} very", "id": n} for n in NOUNS]
    search = {**TRAIN, "backbone": tiny_backbone, "checkpoint_dir": str(tmp_path / "search")}
    funcformer.train("search", docs, pairs=queries, eval_data=held, **search)
    more = [*docs, {"id": "extra", "text": "the staff was very"}]
    with pytest.raises(TaskError, match=r"the eval data differs"):
        funcformer.train("search", more, pairs=queries, eval_data=held, **search, resume=True)


def test_the_content_digest_ignores_where_rows_came_from_and_set_order() -> None:
    from funcformer._data import Examples
    from funcformer._train import content_digest

    a = Examples(texts=["x", "y"], labels=["p", "n"], source="a.csv", places=["line 2", "line 3"])
    b = Examples(texts=["x", "y"], labels=["p", "n"], source="b.tsv", places=["index 0", "index 1"])
    assert content_digest(a) == content_digest(b)
    assert content_digest(a) != content_digest(Examples(["x", "y"], ["n", "p"], "a.csv", []))
    assert content_digest([[1, 2], [3]]) != content_digest([[1], [2, 3]])
    # a set of ids (search's gold answers) iterates in an order that string hashing, so the
    # process, decides: the killed run and the resumed one must still agree
    code = "from funcformer._train import content_digest; print(content_digest([set('abcdef')]))"
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(digests) == 1


def test_a_checkpoint_or_log_dir_that_cannot_be_used_is_refused_before_training(
        tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint_dir that was a file was a FileExistsError traceback after the first epoch;
    one inside a function directory wrote its checkpoints into that artifact."""
    from funcformer import _train

    (tmp_path / "file").write_text("x", "utf-8")
    function = funcformer.train("classify", _rows(), backbone=tiny_backbone,
                                **{**TRAIN, "method": "head"}).save(tmp_path / "fn")
    tuned: list[int] = []  # epochs of the fine-tuning (the linear probe before it may run)
    original = _train._epoch
    monkeypatch.setattr(_train, "_epoch", lambda *a, **k: (
        a[3].method == "full" and tuned.append(1)) or original(*a, **k))
    for key in ("checkpoint_dir", "log_dir"):
        for where, message in ((tmp_path / "file", r"file is a file, so no directory"),
                               (tmp_path / "file" / "ck", r"file is a file, so no directory"),
                               (function, r"is inside the function .*fn, whose artifact"),
                               (function / "ck", r"is inside the function .*fn, whose")):
            with pytest.raises(TaskError, match=rf"{key} .*{message}.*Fix"):
                funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN,
                                 **{key: str(where)})
    assert tuned == []
    assert sorted(p.name for p in function.iterdir()) == ["funcformer.json",
                                                          "head.safetensors"]


def test_cli_refuses_a_checkpoint_dir_inside_out(tiny_backbone: Path, tmp_path: Path,
                                                 capsys) -> None:
    """It trained, then refused to save: --out held the checkpoint and was no function."""
    import csv

    from conftest import run_cli as cli

    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *_rows()])
    common = ("train", "classify", data, "--backbone", tiny_backbone, "--method", "full",
              "--epochs", "1", "--out", tmp_path / "fn")
    for flag, where in (("--checkpoint-dir", tmp_path / "fn"),
                        ("--log-dir", tmp_path / "fn" / "logs")):
        assert cli(*common, flag, where) == 1
        assert f"{flag} {where} is inside --out" in capsys.readouterr().err
        assert not (tmp_path / "fn").exists()


def test_self_training_resumes_round_by_round(tiny_backbone: Path, tmp_path: Path) -> None:
    """Every round wrote to one checkpoint folder, so resuming a self-training run refused round
    0 the last round's checkpoint (other data: steps_per_epoch differed)."""
    from conftest import make_reviews

    train = {**TRAIN, "epochs": 1, "backbone": tiny_backbone,
             "unlabeled": [text for text, _ in make_reviews(6, seed=9)],
             "self_training": {"rounds": 1, "threshold": 0.01}}
    first = funcformer.train("classify", _rows(), **train, checkpoint_dir=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-0", "round-1"]
    again = funcformer.train("classify", _rows(), **train, checkpoint_dir=str(tmp_path),
                             resume=True)
    assert again.digest == first.digest


def test_a_save_killed_between_its_renames_resumes_from_the_one_before(
        tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    """A save moves the last checkpoint aside, then renames the new one in: killed between the
    two, no `checkpoint` was left and resume started from scratch; a killed save's temporary
    folder stayed forever."""
    first = funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN,
                             checkpoint_dir=str(tmp_path))
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old-0badf00d")
    (tmp_path / ".checkpoint.tmp-12345678").mkdir()
    (tmp_path / ".checkpoint.tmp-12345678" / "model.safetensors").write_bytes(b"half")
    again = funcformer.train("classify", _rows(), backbone=tiny_backbone, **LOUD,
                             checkpoint_dir=str(tmp_path), resume=True)
    assert "resuming from the checkpoint" in capsys.readouterr().err
    assert again.digest == first.digest
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


@pytest.mark.parametrize("option", [{"resume": True}, {"checkpoint_steps": 2}])
def test_resume_or_checkpoint_steps_without_a_checkpoint_dir_is_refused(
        tiny_backbone: Path, option: dict[str, Any]) -> None:
    """They did nothing in Python (the CLI refused --resume alone): a run meant to resume
    trained from scratch, one meant to checkpoint wrote nothing."""
    name = next(iter(option))
    with pytest.raises(TaskError, match=rf"{name} needs checkpoint_dir.*Fix: give "
                                        "checkpoint_dir too"):
        funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN, **option)
    # head writes no checkpoints at all (it says so when given a checkpoint_dir)
    funcformer.train("classify", _rows(), backbone=tiny_backbone,
                     **{**TRAIN, "method": "head"}, **option)


def test_checkpoint_steps_count_the_whole_run(tiny_backbone: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps were counted within each epoch, so with more steps than an epoch has (500 for
    epochs of 300) no step checkpoint was ever written. 5 steps an epoch, 2 epochs, every 3:
    global steps 3, 6 and 9, and each epoch's end."""
    from funcformer import _checkpoint

    saved: list[tuple[int, int]] = []
    original = _checkpoint.save
    monkeypatch.setattr(_checkpoint, "save", lambda *a, **k: saved.append(
        (k["state"]["epoch"], k["state"]["step"])) or original(*a, **k))
    funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN,
                     checkpoint_dir=str(tmp_path), checkpoint_steps=3)
    assert saved == [(1, 3), (1, 5), (2, 1), (2, 4), (2, 5)]


def test_a_lora_run_does_not_resume_on_another_backbone(
        tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LoRA checkpoint holds the adapter and head only: resumed onto another backbone of
    the same shapes, the run went on with the two mixed."""
    import shutil

    from safetensors.torch import load_file, save_file

    other = Path(shutil.copytree(tiny_backbone, tmp_path / "other"))
    weights = load_file(str(other / "model.safetensors"))
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
              str(other / "model.safetensors"))
    train = {**TRAIN, "method": "lora", "checkpoint_dir": str(tmp_path / "ckpt")}
    _train_killed_at(1, monkeypatch, backbone=tiny_backbone, **train)
    with pytest.raises(TaskError, match=r"another training run \(the frozen weights \(the "
                                        r"backbone\) differ\)"):
        funcformer.train("classify", _rows(), backbone=other, resume=True, **train)
    resumed = funcformer.train("classify", _rows(), backbone=tiny_backbone, resume=True, **train)
    plain = funcformer.train("classify", _rows(), backbone=tiny_backbone, **TRAIN | {
        "method": "lora"})
    assert resumed.digest == plain.digest


def test_a_checkpoint_of_an_older_funcformer_still_resumes(
        tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints written before the fingerprint recorded the options, the data and the
    frozen weights were refused, said to hold other data and another backbone."""
    import json

    train = {**TRAIN, "backbone": tiny_backbone, "checkpoint_dir": str(tmp_path),
             "checkpoint_steps": 2}
    _train_killed_at(2, monkeypatch, **train)
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text("utf-8"))
    for key in ("options", "data", "frozen"):
        del state["fingerprint"][key]
    state_file.write_text(json.dumps(state), "utf-8")
    resumed = funcformer.train("classify", _rows(), **train, resume=True)
    plain = funcformer.train("classify", _rows(), **{**TRAIN, "backbone": tiny_backbone})
    assert resumed.digest == plain.digest


def test_the_data_digest_reads_given_targets_exactly_and_computed_ones_by_shape() -> None:
    """A teacher's logits recomputed on another device differ in the last bits: a distill run
    resumed there was refused as 'the training data differs'. Scores a user gave count in
    full (edited pair scores resumed a checkpoint of the old ones)."""
    from funcformer._train import data_digest

    ids, logits = torch.tensor([[5, 6, 7]]), torch.tensor([[0.25, -1.5]])
    digest = data_digest([(ids, logits)], computed_targets=True)
    assert data_digest([(ids, logits + 1e-6)], computed_targets=True) == digest
    assert data_digest([(ids + 1, logits)], computed_targets=True) != digest
    scores, labels = torch.tensor([0.3, 0.9]), torch.tensor([0, 1])
    assert data_digest([(ids, scores)]) != data_digest([(ids, scores.flip(0))])
    assert data_digest([(ids, labels)]) != data_digest([(ids, labels.flip(0))])
    features = torch.tensor([[0.1, 0.2]])  # a frozen backbone's: by shape
    assert data_digest([(features, labels)]) == data_digest([(features + 1e-6, labels)])
