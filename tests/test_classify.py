"""The classify task and the head/full methods on a tiny random-init backbone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import DataError, Prediction, TaskError, TrainConfig
from funcformer import _backbone as bb
from funcformer._data import read_examples
from funcformer._methods import holdout
from funcformer._train import History, Plan, _schedule, length_grouped_batches, run


@pytest.fixture(scope="module")
def head_fn(tiny_backbone: Path) -> funcformer.Function:
    from conftest import make_reviews

    return funcformer.train("classify", make_reviews(), backbone=tiny_backbone, progress=False,
                            method="head")


def test_call_shapes(head_fn: funcformer.Function) -> None:
    one = head_fn("the food was great")
    assert isinstance(one, Prediction)
    many = head_fn(["the food was great", "the room was dirty"])
    assert isinstance(many, list) and len(many) == 2
    assert head_fn(["only one"])[0] == head_fn("only one")
    assert head_fn.labels == ["negative", "positive"]
    assert set(one.scores) == {"negative", "positive"}
    assert abs(sum(one.scores.values()) - 1) < 1e-5
    assert one.score == max(one.scores.values()) == one.scores[one.label]
    # a dict is one row (it used to be iterated: one prediction per key, of the key's name)
    assert head_fn({"text": "the food was great", "label": "x"}) == one
    for bad, says in ((None, "Got NoneType: call a function with one input or a list"),
                      (5, "Got int"), (b"great", "Got bytes. Fix: decode them first")):
        with pytest.raises(DataError, match=says):
            head_fn(bad)


def test_head_learns_separable_data(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    fn = funcformer.train("classify", make_reviews(30), eval_data=make_reviews(10, seed=7),
                          backbone=tiny_backbone, progress=False, method="head")
    assert fn.metrics["accuracy"] >= 0.7
    assert fn.manifest.training["eval_source"] == "given"


def test_same_seed_same_function_other_seed_differs(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    rows = make_reviews()
    a, b, c = (funcformer.train("classify", rows, backbone=tiny_backbone, progress=False,
                                epochs=3, seed=s, method="head") for s in (1, 1, 2))
    assert a.digest == b.digest
    assert a.digest != c.digest


def test_full_is_reproducible_and_leaves_the_shared_backbone_alone(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    # 10 examples: too few to hold any out, so no early stopping and every epoch trains
    runs = [funcformer.train("classify", make_reviews(5), backbone=tiny_backbone, method="full",
                             epochs=2, progress=False) for _ in range(2)]
    assert runs[0].digest == runs[1].digest
    assert runs[0].encoder is not None and runs[0].encoder is not shared.model
    for key, value in shared.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    changed = any(not torch.equal(v, before[k]) for k, v in runs[0].encoder.state_dict().items())
    assert changed
    assert runs[0].manifest.backbone.included


def test_without_eval_data_part_is_held_out(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    fn = funcformer.train("classify", make_reviews(100), backbone=tiny_backbone, progress=False,
                          epochs=2, method="head")
    assert fn.manifest.training["eval_source"] == "held out 20"
    assert "held_out_accuracy" in fn.metrics


def test_contrastive_trains_on_every_row_unless_asked_to_hold_out(tiny_backbone: Path) -> None:
    """Few-shot data: every example tunes the encoder (holding a tenth out cost Emotion 2.4
    points with 64 per class); an explicit eval_fraction still holds rows out."""
    from conftest import make_reviews

    def train(**options):
        return funcformer.train("classify", make_reviews(100), backbone=tiny_backbone,
                                progress=False, epochs=1, method="contrastive", **options)

    assert train().manifest.training["eval_source"] == "none"
    assert train(eval_fraction=0.1).manifest.training["eval_source"] == "held out 20"
    assert funcformer.TrainConfig(method="contrastive").eval_share == 0.1  # other holdouts


def test_holdout_is_stratified_and_seeded() -> None:
    from conftest import make_reviews

    examples = read_examples(make_reviews(100))
    train, held = holdout(examples, 0.1, seed=3)
    assert held is not None and len(held) == 20 and len(train) == 180
    assert sorted(held.labels or []) == ["negative"] * 10 + ["positive"] * 10
    assert holdout(examples, 0.1, seed=3)[1].texts == held.texts  # type: ignore[union-attr]
    small = read_examples(make_reviews(50))  # 10 would be held out: too few to judge by
    assert holdout(small, 0.1, seed=0)[1] is None


def test_truncation_is_reported_once(tiny_backbone: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    from conftest import make_reviews

    rows = [*make_reviews(10), ("great " * 200, "positive"), ("awful " * 200, "negative")]
    with caplog.at_level(logging.WARNING, logger="funcformer"):
        fn = funcformer.train("classify", rows, backbone=tiny_backbone, progress=False,
                              epochs=1, method="head")
    assert fn.manifest.training["truncated"] == 2
    notes = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("2 of 22")
    caplog.clear()
    long = "great " * 200  # a repeated text is embedded once but counted each time
    with caplog.at_level(logging.WARNING, logger="funcformer"):
        fn([long, long, long, "short"])
    notes = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("3 of 4"), notes


def test_eval_labels_must_be_known(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    with pytest.raises(DataError, match=r"<list>, index 1.*unknown label 'neutral'\. The "
                                        r"labels \(from the training data\): negative, "
                                        r"positive\. Fix: "):
        funcformer.train("classify", make_reviews(), backbone=tiny_backbone, progress=False,
                         eval_data=[("ok", "positive"), ("fine", "neutral")], method="head")


def test_an_unknown_call_option_is_a_task_error(head_fn: funcformer.Function,
                                                tiny_backbone: Path) -> None:
    # it was a TypeError from predict; the CLI and the server already named the option
    with pytest.raises(TaskError, match=r"'kk' is not a call option of classify functions\. "
                                        r"Options: none"):
        head_fn("the food was great", kk=1)
    search = funcformer.train("search", ["the food was great", "the room"],
                              backbone=tiny_backbone)
    with pytest.raises(TaskError, match=r"'kk' is not a call option of search .*Options: k, "):
        search("food", kk=1)
    assert search("food", k=1)  # the real ones still pass
    zero_shot = funcformer.ZeroShot(["positive", "negative"], backbone=tiny_backbone)
    with pytest.raises(TaskError, match="'kk' is not a call option of zero_shot"):
        zero_shot("fine", kk=1)
    assert zero_shot("fine", labels=["a", "b"]).label in ("a", "b")


def test_micro_f1_is_refused_for_single_label_data(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    # it trained an epoch, then stopped with KeyError: 'micro_f1'
    with pytest.raises(TaskError, match=r"metric 'micro_f1' does not score single-label "
                                        r"classify functions\. Choose one of: accuracy, "
                                        r"macro_f1"):
        funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method="head",
                         metric="micro_f1", progress=False)


def test_bad_options_are_task_errors(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    with pytest.raises(TaskError, match="Unknown training option"):
        funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epoch=3, method="head")
    with pytest.raises(TaskError, match="Unknown task"):
        funcformer.train("translate", make_reviews(), backbone=tiny_backbone)
    with pytest.raises(TaskError, match="Unknown training method"):
        TrainConfig(method="magic")
    with pytest.raises(TaskError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)
    assert TrainConfig(method="full").resolved().learning_rate == 5e-5


def test_chinese_classification_end_to_end(tiny_chinese_backbone: Path, tmp_path: Path) -> None:
    rows = [("服务很好", "好"), ("菜很好", "好"), ("服务很坏", "坏"), ("菜不好", "坏")] * 6
    fn = funcformer.train("classify", rows, backbone=tiny_chinese_backbone, progress=False,
                          epochs=20, learning_rate=0.05, method="head")
    assert fn.labels == ["坏", "好"]
    assert fn("服务很好").label in {"好", "坏"}
    loaded = funcformer.load(fn.save(tmp_path / "zh"))
    assert loaded("服务很好") == fn("服务很好")


class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def _toy_plan(scores: list[float]) -> tuple[Plan, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    model, snapshots = _Toy(), []
    data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]

    def evaluate(m: torch.nn.Module) -> float:
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return scores[len(snapshots) - 1]

    plan = Plan(model=model, batches=lambda epoch: data, forward=lambda m, x: m(x),
                loss=torch.nn.functional.cross_entropy, evaluate=evaluate)
    return plan, snapshots


def test_early_stopping_keeps_the_best_epoch() -> None:
    plan, snapshots = _toy_plan([0.5, 0.9, 0.8, 0.7, 0.95])
    history = run(plan, TrainConfig(epochs=5, patience=2, learning_rate=0.1).resolved(),
                  progress=False)
    assert isinstance(history, History)
    assert history.stopped_early and history.best_epoch == 2 and len(history.epochs) == 4
    for key, value in plan.model.state_dict().items():
        assert torch.equal(value, snapshots[1][key])


def test_schedule_warms_up_then_decays() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = _schedule(optimizer, total=10, warmup_ratio=0.2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == 0.5 and rates[1] == 1.0
    assert rates[2:] == sorted(rates[2:], reverse=True) and rates[-1] < 0.2


def test_gradients_are_clipped() -> None:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    plan, _ = _toy_plan([0.0])
    plan.loss = lambda logits, targets: logits.sum() * 1e6
    plan.evaluate = None
    norms = []

    def before_step(optimizer, args, kwargs):  # type: ignore[no-untyped-def]
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(float(torch.norm(torch.stack([g.norm() for g in grads]))))

    hook = register_optimizer_step_pre_hook(before_step)
    try:
        run(plan, TrainConfig(epochs=1, max_grad_norm=1.0).resolved(), progress=False)
    finally:
        hook.remove()
    assert norms and max(norms) <= 1.0 + 1e-4


def test_length_grouped_batches_cover_everything_once() -> None:
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 4, 6] * 5
    batches = length_grouped_batches(lengths, batch_size=4, seed=0, group=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == length_grouped_batches(lengths, batch_size=4, seed=0, group=2)
    assert batches != length_grouped_batches(lengths, batch_size=4, seed=1, group=2)


def test_full_keeps_the_linear_probe_when_fine_tuning_never_beats_it(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method="full",
                          eval_data=make_reviews(10, seed=3), epochs=2,
                          learning_rate=1e-12, head_learning_rate=1e-12,
                          patience=1, progress=False)
    history = fn.manifest.training["history"]
    assert history["epochs"][0]["epoch"] == 0 and history["best_epoch"] == 0
    shared = bb.load(tiny_backbone).model.state_dict()
    for key, value in fn.encoder.state_dict().items():
        assert torch.equal(value, shared[key]), key


def test_zero_shot_init_starts_from_label_embeddings(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    zs = funcformer.ZeroShot({"positive": "the food was great", "negative": "the room was dirty"},
                             backbone=tiny_backbone)
    fn = zs.fit(make_reviews(), eval_data=make_reviews(10, seed=3), epochs=3, progress=False)
    assert fn.manifest.training["init"] == "zero_shot"
    assert fn.manifest.training["history"]["epochs"][0]["epoch"] == 0  # zero-shot baseline
    untrained = funcformer.train("classify", make_reviews(), backbone=tiny_backbone,
                                 init=zs, epochs=1, learning_rate=1e-12, progress=False,
                                 method="head")
    texts = ["the food was great", "the room was dirty"]
    assert [p.label for p in untrained(texts)] == [p.label for p in zs(texts)]
    with pytest.raises(TaskError, match="init must be"):
        funcformer.train("classify", make_reviews(), backbone=tiny_backbone, init="random",
                         method="head")


@pytest.mark.parametrize("tiebreaks, kept", [(None, 1), ([-3.0, -2.0, -1.0], 3),
                                             ([-1.0, -2.0, -3.0], 1)])
def test_early_stopping_breaks_metric_ties_on_the_tiebreak(tiebreaks, kept):
    """Three epochs with the same accuracy: with a tie-break (minus the eval loss) the epoch
    with the best one is kept; a bare metric keeps the first (a later tie does not improve)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    inputs, targets = torch.randn(8, 2), torch.tensor([0, 1] * 4)
    seen = iter(range(3))

    def evaluate(_: torch.nn.Module):
        epoch = next(seen)
        return 0.75 if tiebreaks is None else (0.75, tiebreaks[epoch])

    plan = Plan(model=model, batches=lambda epoch: [(inputs, targets)],
                forward=lambda m, x: m(x), loss=torch.nn.functional.cross_entropy,
                evaluate=evaluate)
    history = run(plan, TrainConfig(epochs=3, patience=5, learning_rate=0.1), progress=False)
    assert history.best_epoch == kept
    assert history.best_metric == 0.75
    assert history.best_tiebreak == (None if tiebreaks is None else max(tiebreaks))


def test_epochs_inside_the_warm_up_are_not_kept_nor_count_for_patience():
    """10 epochs, warm-up 30%: epochs 1 and 2 end inside it, so their lucky scores are neither
    kept nor waited on; epoch 3 (warm-up done) is the first candidate."""
    plan, snapshots = _toy_plan([0.99, 0.98, 0.5, 0.6, 0.55, 0.54, 0.53, 0.52, 0.51, 0.5])
    config = TrainConfig(epochs=10, patience=2, learning_rate=0.1, warmup_ratio=0.3).resolved()
    history = run(plan, config, progress=False)
    assert history.best_epoch == 4 and history.best_metric == 0.6
    assert history.stopped_early and len(history.epochs) == 6
    for key, value in plan.model.state_dict().items():
        assert torch.equal(value, snapshots[3][key])


def test_judge_is_the_metric_and_minus_the_eval_loss():
    from funcformer._tasks.classify import Classify

    task = Classify(["neg", "pos"])
    examples = read_examples([{"text": "a", "label": "neg"}, {"text": "b", "label": "pos"}])
    sure, unsure = torch.tensor([[4.0, -4.0], [-4.0, 4.0]]), torch.tensor([[0.1, 0.0], [0.0, 0.1]])
    (sure_score, sure_tie), (unsure_score, unsure_tie) = (
        task.judge(logits, examples, "accuracy") for logits in (sure, unsure))
    assert sure_score == unsure_score == 1.0
    assert sure_tie > unsure_tie


def test_classification_metrics_match_scikit_learn() -> None:
    """The metrics are counted in plain Python (no sklearn import while training); they must
    equal scikit-learn's, labels outside the function's included."""
    import random
    import warnings

    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from funcformer._metrics import classification_metrics

    draw = random.Random(0)
    for _ in range(300):
        labels = ["a", "b", "c", "d"][: draw.randint(1, 4)]
        seen = labels + ["unknown"] * draw.randint(0, 1)
        n = draw.randint(1, 25)
        gold = [draw.choice(seen) for _ in range(n)]
        predicted = [draw.choice([*seen, "other"]) for _ in range(n)]
        if not set(gold) & set(labels):
            continue  # sklearn's confusion_matrix refuses these
        ours = classification_metrics(gold, predicted, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            precision, recall, f1, support = precision_recall_fscore_support(
                gold, predicted, labels=labels, zero_division=0)
            matrix = confusion_matrix(gold, predicted, labels=labels).tolist()
        assert ours["confusion_matrix"] == matrix
        assert ours["accuracy"] == sum(g == p for g, p in zip(gold, predicted, strict=True)) / n
        assert ours["macro_f1"] == pytest.approx(float(sum(f1)) / len(labels), abs=1e-12)
        for k, label in enumerate(labels):
            row = ours["per_class"][label]
            assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
                (precision[k], recall[k], f1[k]), abs=1e-12)
            assert row["support"] == support[k]


@pytest.mark.parametrize("options, error, says", [
    ({"device": "tpu"}, TaskError, r"device 'tpu' is not a torch device\. Fix: "),
    ({"cache": 5}, TaskError, "cache must be 'memory', a file path or a cache object, got 5"),
    ({"config": 5}, TaskError, "config must be a TrainConfig or a dict of its fields, got int"),
])
def test_bad_train_arguments_are_funcformer_errors(tiny_backbone: Path, options: dict,
                                                   error: type, says: str) -> None:
    # were torch's RuntimeError, pathlib's TypeError and an AttributeError
    with pytest.raises(error, match=says):
        funcformer.train("classify", [("good", "pos"), ("bad", "neg")] * 4,
                         backbone=tiny_backbone, method="head", progress=False, **options)


def test_config_may_be_a_dict_of_fields(tiny_backbone: Path) -> None:
    fn = funcformer.train("classify", [("good", "pos"), ("bad", "neg")] * 4,
                          backbone=tiny_backbone, method="head", progress=False,
                          config={"epochs": 2, "seed": 7})
    assert (fn.manifest.config["epochs"], fn.manifest.config["seed"]) == (2, 7)
