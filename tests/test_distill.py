"""Distillation (issue 8): a smaller student of a classify function, on its soft labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import english_vocab, make_reviews, run_cli
from test_cli import assert_clean_error, write_reviews

import funcformer
from funcformer import DataError, TaskError
from funcformer._distill import distillation_loss, keep_layers, soft_loss
from funcformer._tasks.classify import Classify


@pytest.fixture(scope="module")
def teacher_dir(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `full` teacher trained from a file (its manifest records where), saved."""
    root = tmp_path_factory.mktemp("teacher")
    data = write_reviews(root / "train.csv", make_reviews(40))
    fn = funcformer.train("classify", str(data), backbone=tiny_backbone, method="full",
                          epochs=3, progress=False)
    return fn.save(root / "teacher")


def _agreement(student: funcformer.Function, teacher: funcformer.Function,
               texts: list[str]) -> float:
    return sum(a.label == b.label for a, b in zip(student(texts), teacher(texts),
                                                  strict=True)) / len(texts)


def test_student_has_fewer_layers_loads_offline_and_agrees_with_the_teacher(
        teacher_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unlabeled = [text for text, _ in make_reviews(20, seed=5)]
    student = funcformer.distill(teacher_dir, student_layers=1, unlabeled=unlabeled, epochs=4,
                                 progress=False)
    teacher = funcformer.load(teacher_dir)
    info = student.manifest.training["distill"]
    assert info["teacher_digest"] == teacher.digest
    assert info["kept_layers"] == [0] and info["teacher_layers"] == 2
    assert (info["labelled"], info["unlabeled"]) == (80, 40)
    assert info["temperature"] == 2.0 and info["label_weight"] == 0.5
    assert student.manifest.method == "full" and student.manifest.backbone.included
    assert student.manifest.backbone.base_digest == teacher.manifest.backbone.base_digest
    student.save(tmp_path / "student")
    files = {p.relative_to(tmp_path / "student").as_posix()
             for p in (tmp_path / "student").rglob("*") if p.is_file()}
    assert {"funcformer.json", "head.safetensors", "encoder/config.json",
            "encoder/model.safetensors"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)

    from funcformer import _backbone

    def no_network(*args: object) -> None:
        raise AssertionError("load went to the network")

    monkeypatch.setattr(_backbone, "_from_hub", no_network)
    loaded = funcformer.load(tmp_path / "student")
    assert loaded.backbone.model.config.num_hidden_layers == 1
    assert len(loaded.backbone.model.encoder.layer) == 1
    texts = [text for text, _ in make_reviews(40)] + unlabeled
    assert [p.label for p in loaded(texts)] == [p.label for p in student(texts)]
    assert torch.allclose(loaded.logits(texts[:5]), student.logits(texts[:5]), atol=1e-5)
    assert len({p.label for p in teacher(texts)}) == 2  # agreeing with a constant is easy
    assert _agreement(loaded, teacher, texts) >= 0.75


def test_keep_layers_keeps_evenly_spaced_layers_with_their_weights() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=6,
                                 num_attention_heads=2, intermediate_size=32))
    before = [layer.attention.self.query.weight.clone() for layer in model.encoder.layer]
    assert keep_layers(model, 3) == [0, 2, 4]
    assert model.config.num_hidden_layers == 3 and len(model.encoder.layer) == 3
    for new, old in enumerate([0, 2, 4]):
        assert torch.equal(model.encoder.layer[new].attention.self.query.weight, before[old])
    out = model(input_ids=torch.tensor([[2, 5, 7, 3]]))
    assert out.last_hidden_state.shape == (1, 4, 16)


def test_soft_loss_is_zero_at_the_teacher_and_the_mix_uses_gold_rows_only() -> None:
    teacher = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    assert float(soft_loss(teacher, teacher, 3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_loss(-teacher, teacher, 3.0)) > 0
    task = Classify(["a", "b"])
    student = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    no_gold = torch.cat([teacher, torch.tensor([[-1.0], [-1.0]])], dim=1)
    one_gold = torch.cat([teacher, torch.tensor([[1.0], [-1.0]])], dim=1)
    mixed = distillation_loss(task, 2.0, 0.5)
    soft = soft_loss(student, teacher, 2.0)
    assert torch.allclose(mixed(student, no_gold), soft)
    hard = torch.nn.functional.cross_entropy(student[:1], torch.tensor([1]))
    assert torch.allclose(mixed(student, one_gold), 0.5 * soft + 0.5 * hard)
    assert torch.allclose(distillation_loss(task, 2.0, 0.0)(student, one_gold), soft)


def test_multi_label_lora_teacher_and_another_student_backbone(
        tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [(text, label if "was" in text and i % 3 else f"{label}|shared")
            for i, (text, label) in enumerate(make_reviews(30))]
    teacher = funcformer.train("classify", rows, backbone=tiny_backbone, method="lora",
                               multi_label=True, epochs=2, progress=False)
    weights = {k: v.clone() for k, v in teacher.backbone.model.state_dict().items()}
    student_dir = _write_small_backbone(tmp_path / "small")
    student = funcformer.distill(teacher, student=str(student_dir), data=rows, epochs=2,
                                 eval_data=rows[:24], progress=False)
    # The LoRA teacher's shared backbone is untouched; the student has its own hidden size.
    assert all(torch.equal(v, weights[k]) for k, v in
               teacher.backbone.model.state_dict().items())
    assert student.backbone.hidden_size == 16 and student.manifest.head.hidden == 16
    assert student.task.thresholds == teacher.task.thresholds
    assert student.manifest.training["distill"]["student"] == str(student_dir)
    assert {"micro_f1", "teacher_micro_f1", "teacher_agreement"} <= set(student.metrics)
    student.save(tmp_path / "student")
    loaded = funcformer.load(tmp_path / "student")
    assert loaded("the food was great").labels == student("the food was great").labels


def _write_small_backbone(directory: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir()
    vocab = english_vocab()
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(directory)
    torch.manual_seed(3)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(directory)
    return directory


def test_bad_requests_are_clear_errors(teacher_dir: Path, tiny_backbone: Path,
                                       tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="from 1 to 1"):
        funcformer.distill(teacher_dir, student_layers=2, progress=False)
    with pytest.raises(TaskError, match="temperature"):
        funcformer.distill(teacher_dir, temperature=0, progress=False)
    with pytest.raises(TaskError, match="temperature must be a positive finite number, got inf"):
        funcformer.distill(teacher_dir, temperature=float("inf"), progress=False)
    with pytest.raises(TaskError, match="keeps the teacher's head"):
        funcformer.distill(teacher_dir, student_layers=1, head="mlp", progress=False)
    for config in (funcformer.TrainConfig(method="contrastive"), {"method": "head"}):
        with pytest.raises(TaskError, match=r"config has method .* drop method from config"):
            funcformer.distill(teacher_dir, student_layers=1, config=config, progress=False)
    zero_shot = funcformer.train("zero_shot", ["positive", "negative"], backbone=tiny_backbone)
    with pytest.raises(TaskError, match="classify functions"):
        funcformer.distill(zero_shot, progress=False)
    from_list = funcformer.train("classify", make_reviews(10), backbone=tiny_backbone,
                                 method="head", epochs=1, progress=False)
    assert "data" not in from_list.manifest.training
    with pytest.raises(DataError, match="no texts"):
        funcformer.distill(from_list, student_layers=1, progress=False)
    moved = Path(shutil.copytree(teacher_dir, tmp_path / "moved"))
    manifest = json.loads((moved / "funcformer.json").read_text("utf-8"))
    manifest["training"]["data"]["path"] = str(tmp_path / "gone.csv")
    (moved / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(DataError, match=r"gone\.csv: .* no longer there"):
        funcformer.distill(moved, student_layers=1, progress=False)


def test_cli_distill(teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    texts = tmp_path / "more.txt"
    texts.write_text("\n".join(t for t, _ in make_reviews(10, seed=9)) + "\n", "utf-8")
    out = tmp_path / "student"
    code = run_cli("distill", teacher_dir, "--student-layers", "1", "--unlabeled", texts,
                   "--epochs", "1", "--out", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "kept layers 0 of 2" in captured.out and "80 labelled + 20 unlabelled" in captured.out
    assert "?" not in captured.out  # it printed "(? examples)"
    assert funcformer.load(out).manifest.training["distill"]["kept_layers"] == [0]
    code = run_cli("distill", teacher_dir, "--student-layers", "5", "--out", tmp_path / "x")
    err = capsys.readouterr().err
    assert_clean_error(code, err)
    assert "student_layers must be from 1 to 1" in err
    code = run_cli("distill", tmp_path / "missing", "--out", tmp_path / "y")
    err = capsys.readouterr().err
    assert_clean_error(code, err)
    assert "no such directory" in err
    assert run_cli("distill", teacher_dir) == 2  # --out is required
    assert run_cli("distill", "--help") == 0
    assert "--student-layers" in capsys.readouterr().out


def test_a_teacher_loaded_in_bfloat16_distils_a_float32_student(teacher_dir: Path,
                                                                tmp_path: Path) -> None:
    """The student's encoder was a bfloat16 copy fed to its float32 head: a raw dtype error."""
    teacher = funcformer.load(teacher_dir, dtype="bfloat16")
    student = funcformer.distill(teacher, student_layers=1, data=make_reviews(8), epochs=1,
                                 progress=False)
    assert next(student.encoder.parameters()).dtype == torch.float32
    assert student.backbone.device == "cpu"  # the teacher's device, the default
    loaded = funcformer.load(student.save(tmp_path / "student"))
    assert loaded(["the food was great"]) == student(["the food was great"])
