"""The generate task on a tiny random-init GPT-2 (no generative weights can be downloaded here).

The fixture trains a byte-level BPE tokenizer on a few sentences and writes a 2-layer GPT-2
(hidden 32, 128 positions) beside it. Its initializer range is wide, so greedy text varies
from token to token (and often holds bytes that are no valid UTF-8 on their own), and the
EOS embedding is zero, so the untrained model does not end its text at once.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import funcformer
from funcformer import ArtifactError, BackboneNotFound, DataError, TaskError
from funcformer._causal import Tracker
from funcformer._tasks import generate
from funcformer._tasks.generate import IGNORE, Generation, causal_loss, collate, encode_pairs

SENTENCES = ["say A: apple", "say B: banana", "the cat sat on the mat", "hello world",
             "a quick brown fox jumps over the lazy dog", "café crème"]
PAIRS = [("say A:", " apple"), ("say B:", " banana"), ("say C:", " 日本茶")]
PROMPTS = ["say A:", "the cat sat on the mat and then", "hello", "a quick brown fox"]


def write_tiny_lm(directory: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(SENTENCES * 5, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                        pad_token="<pad>")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128,
                        vocab_size=len(tokenizer), initializer_range=0.3,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # an EOS logit of exactly 0, far below the best: greedy runs on
        model.transformer.wte.weight[tokenizer.eos_token_id] = 0.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy shared CPU slows two threads ~40x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_lm(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def fn(tiny_lm: Path) -> generate.TextGenerator:
    return generate.from_backbone(tiny_lm)


@pytest.fixture(scope="module")
def tuned(tiny_lm: Path) -> generate.TextGenerator:
    return funcformer.train("generate", PAIRS * 8, backbone=tiny_lm, progress=False, epochs=20,
                            learning_rate=1e-2, batch_size=8)


def test_greedy_is_deterministic_and_respects_max_new_tokens(fn: generate.TextGenerator) -> None:
    first, again = fn("say A:", max_new_tokens=12), fn("say A:", max_new_tokens=12)
    assert isinstance(first, Generation) and first == again
    assert (first.tokens, first.finish_reason) == (12, "length")
    short = fn("say A:", max_new_tokens=4)
    assert (short.tokens, short.finish_reason) == (4, "length")
    assert first.text.startswith(short.text.rstrip("\ufffd"))
    assert len(short.text) < len(first.text)


def test_sampling_with_a_seed_is_reproducible(fn: generate.TextGenerator) -> None:
    options = {"max_new_tokens": 16, "temperature": 1.0}
    a, b = fn("hello", seed=3, **options), fn("hello", seed=3, **options)
    other = fn("hello", seed=4, **options)
    greedy = fn("hello", max_new_tokens=16)
    assert a == b
    assert other.text != a.text and greedy.text != a.text
    # top_p this small keeps only the likeliest token: sampling becomes greedy
    assert fn("hello", seed=5, top_p=1e-6, **options) == greedy
    # extreme values were a RuntimeError (inf/nan probabilities; a 500 from the server)
    assert fn("hello", seed=5, max_new_tokens=16, temperature=1e-300) == greedy
    assert fn("hello", seed=5, top_p=1e-300, **options) == greedy


def test_stop_string_is_cut_and_ends_generation(fn: generate.TextGenerator) -> None:
    full = fn("hello", max_new_tokens=30).text
    stop = next(full[i:i + 2] for i in range(2, len(full) - 1)
                if "\ufffd" not in full[i:i + 2] and full[i:i + 2].isprintable())
    cut = fn("hello", max_new_tokens=30, stop=["never-there", stop])
    assert cut.finish_reason == "stop"
    assert cut.text == full[:full.find(stop)]
    assert cut.tokens < 30
    assert fn("hello", max_new_tokens=30, stop=stop) == cut  # one string: a list of one


@pytest.mark.parametrize("options", [{}, {"temperature": 0.8, "seed": 7},
                                     {"stop": ["QQ"]}])
def test_stream_pieces_join_to_the_same_text(fn: generate.TextGenerator,
                                              options: dict) -> None:
    for prompt in PROMPTS[:2]:
        pieces = list(fn.stream(prompt, max_new_tokens=24, **options))
        assert "".join(pieces) == fn(prompt, max_new_tokens=24, **options).text
        assert all(pieces)


def test_stream_stops_at_a_stop_string_and_never_shows_it(fn: generate.TextGenerator) -> None:
    full = fn("hello", max_new_tokens=30).text
    stop = next(full[i:i + 3] for i in range(3, len(full) - 2)
                if "\ufffd" not in full[i:i + 3])
    pieces = list(fn.stream("hello", max_new_tokens=30, stop=[stop]))
    assert "".join(pieces) == full[:full.find(stop)]


def test_stream_leaves_the_callers_autograd_mode_alone(fn: generate.TextGenerator) -> None:
    modes = [torch.is_inference_mode_enabled() for _ in fn.stream("hello", max_new_tokens=5)]
    assert modes and not any(modes)


def test_tracker_holds_back_half_characters_and_stop_prefixes(tiny_lm: Path) -> None:
    tokenizer = funcformer._causal.load(tiny_lm).tokenizer
    ids = tokenizer("日本", add_special_tokens=False)["input_ids"]
    assert len(ids) > 2  # byte tokens: a character spans several
    tracker = Tracker(tokenizer, tokenizer("x")["input_ids"], eos_ids={0}, stop=[], limit=99)
    pieces = []
    for token in ids:
        tracker.push(token)
        pieces.append(tracker.delta())
    assert "".join(pieces) == "日本" and not any("\ufffd" in p for p in pieces)
    tracker = Tracker(tokenizer, [5], eos_ids={0}, stop=[" a mat"], limit=99)
    shown = []
    for token in tokenizer("the cat sat on a", add_special_tokens=False)["input_ids"]:
        tracker.push(token)
        shown.append(tracker.delta())
    assert "".join(shown) == "the cat sat on"  # " a" may start the stop string: held back
    for token in tokenizer(" mat", add_special_tokens=False)["input_ids"]:
        tracker.push(token)
    assert tracker.finish == "stop" and tracker.text == "the cat sat on"
    assert tracker.delta() == ""


def test_batch_of_different_lengths_equals_single_calls(fn: generate.TextGenerator) -> None:
    for options in ({}, {"temperature": 1.0, "seed": 11}):
        batch = fn(PROMPTS, max_new_tokens=16, **options)
        assert batch == [fn(p, max_new_tokens=16, **options) for p in PROMPTS]
    assert fn([PROMPTS[0]])[0] == fn(PROMPTS[0])


def test_prompt_longer_than_the_context_loses_its_start(fn: generate.TextGenerator,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    long = "the cat sat on the mat and " * 30
    ids = fn.lm.tokenizer(long)["input_ids"]
    assert len(ids) > 118
    with caplog.at_level(logging.WARNING, logger="funcformer"):
        cut = fn(long, max_new_tokens=10)
    assert "start was cut" in caplog.text
    tail = fn.lm.tokenizer.decode(ids[-118:])
    assert cut == fn(tail, max_new_tokens=10)
    with pytest.raises(TaskError, match="no room"):
        fn("hello", max_new_tokens=128)


def test_the_output_layer_runs_on_the_last_position_only(tiny_lm: Path, monkeypatch) -> None:
    """The first step's output layer ran over every prompt position (B x T x vocabulary) where
    the next token needs the last; the tokens stay those of the full computation, and a model
    whose forward lacks `logits_to_keep` (custom code) still decodes."""
    lm = funcformer._causal.load(tiny_lm)
    rows = [lm.tokenizer(t)["input_ids"] for t in ("the cat sat on the mat", "a dog")]
    widths = []
    hook = lm.model.lm_head.register_forward_hook(
        lambda module, args, out: widths.append(out.shape[1]))
    try:
        steps = funcformer._causal.next_tokens(lm.model, rows, lm.pad_id,
                                               lambda logits: logits.argmax(-1))
        kept = [next(steps) for _ in range(5)]
        assert widths == [1] * 5
        monkeypatch.setattr(funcformer._causal, "_accepts", lambda model, name: False)
        steps = funcformer._causal.next_tokens(lm.model, rows, lm.pad_id,
                                               lambda logits: logits.argmax(-1))
        assert [next(steps) for _ in range(5)] == kept
        assert widths[5] == max(len(row) for row in rows)
    finally:
        hook.remove()


def test_prompt_masking_labels_only_the_completion(tiny_lm: Path) -> None:
    lm = funcformer._causal.load(tiny_lm)
    records = generate.read_pairs([("say A:", " apple"), ("the cat sat on the mat", " yes")])
    pairs = encode_pairs(lm, records, None)
    eos = lm.tokenizer.eos_token_id
    for row, ids, labels in zip(records.rows, pairs.ids, pairs.labels, strict=True):
        prompt = lm.tokenizer(row["prompt"])["input_ids"]
        completion = lm.tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        assert ids == prompt + completion + [eos]
        assert labels == [IGNORE] * len(prompt) + completion + [eos]
    inputs, labels = collate(pairs, [0, 1], lm.pad_id, "cpu")
    short = len(pairs.ids[0])
    assert labels[0, short:].eq(IGNORE).all() and inputs["attention_mask"][0, short:].eq(0).all()
    # the loss sees completion tokens only: changing what the prompt positions predict of
    # other prompt tokens changes nothing
    logits = torch.randn(2, labels.shape[1], len(lm.tokenizer))
    changed = logits.clone()
    changed[0, : len(lm.tokenizer("say A:")["input_ids"]) - 1] += 5 * torch.randn(1)
    assert torch.allclose(causal_loss(logits, labels), causal_loss(changed, labels))
    # too long: the prompt loses its start; a completion longer than the limit loses its
    # end, and one prompt token always stays to predict the first completion token from
    cut = encode_pairs(lm, records, 4)
    assert cut.truncated == 2 and [len(row) for row in cut.ids] == [4, 4]
    assert cut.ids[0] == pairs.ids[0][-4:] and cut.labels[0][:2] == [IGNORE, IGNORE]
    yes = lm.tokenizer(" yes", add_special_tokens=False)["input_ids"]
    assert len(yes) >= 3 and cut.labels[1][0] == IGNORE and cut.ids[1][1:] == yes[:3]


def test_fine_tuning_memorises_completions(tuned: generate.TextGenerator, tiny_lm: Path,
                                           fn: generate.TextGenerator) -> None:
    for prompt, completion in PAIRS:
        result = tuned(prompt)
        assert (result.text, result.finish_reason) == (completion, "eos")
    pieces = list(tuned.stream("say C:"))
    assert "".join(pieces) == " 日本茶" and not any("\ufffd" in p for p in pieces)
    assert tuned.lm.model is not fn.lm.model  # the shared LM is left as it was
    before, after = fn.evaluate(PAIRS), tuned.evaluate(PAIRS)
    assert set(after) == {"loss", "perplexity", "examples"} and after["examples"] == 3
    assert after["loss"] < 0.5 < before["loss"]
    assert math.isclose(after["perplexity"], math.exp(after["loss"]))
    assert tuned.manifest.training["examples"] == 24
    assert tuned.manifest.training["eval_source"] == "none"


def test_eval_data_selects_the_epoch_and_is_reported(tiny_lm: Path) -> None:
    fn = funcformer.train("generate", PAIRS * 4, eval_data=PAIRS, backbone=tiny_lm,
                          progress=False, epochs=2, learning_rate=1e-2, batch_size=8)
    epochs = fn.manifest.training["history"]["epochs"]
    assert [e["epoch"] for e in epochs] == [0.0, 1.0, 2.0]
    best = fn.manifest.training["history"]["best_metric"]
    assert math.isclose(fn.metrics["loss"], -best, rel_tol=1e-4)
    assert fn.manifest.training["eval_source"] == "given"
    # without eval data, enough pairs are held out for early stopping
    config = funcformer.TrainConfig(epochs=1, batch_size=8, eval_fraction=0.49)
    held = funcformer.train("generate", PAIRS * 14, backbone=tiny_lm, progress=False,
                            config=config)
    assert held.manifest.training["eval_source"] == "held out 21"
    assert held.manifest.method == held.manifest.config["method"] == "full"
    assert held.metrics["held_out_loss"] == -held.manifest.training["history"]["best_metric"]


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_fine_tuned_round_trip(tuned: generate.TextGenerator, tmp_path: Path) -> None:
    saved = tuned.save(tmp_path / "fn")
    model_files = {f"model/{name}" for name in ("config.json", "generation_config.json",
                                                "model.safetensors", "tokenizer.json",
                                                "tokenizer_config.json")}
    assert _files(saved) == {"funcformer.json"} | model_files
    manifest = json.loads((saved / "funcformer.json").read_text())
    assert manifest["task"] == "generate" and manifest["method"] == "full"
    assert manifest["backbone"]["included"] and manifest["backbone"]["base_digest"]
    loaded = funcformer.load(saved)
    assert isinstance(loaded, generate.TextGenerator) and loaded.digest == tuned.digest
    for options in ({}, {"temperature": 1.0, "seed": 2, "max_new_tokens": 8}):
        assert loaded(PROMPTS, **options) == tuned(PROMPTS, **options)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_generator_loaded_in_half_precision_saves_float32_weights(
        tuned: generate.TextGenerator, tiny_lm: Path, tmp_path: Path, dtype: str) -> None:
    """The fine-tuned LM (save_pretrained) and a LoRA adapter were written in the dtype they
    were loaded in, and the LM's config said so."""
    from safetensors.torch import load_file

    adapted = funcformer.train("generate", PAIRS, backbone=tiny_lm, method="lora", epochs=1,
                               progress=False)
    for name, fn in (("full", tuned), ("lora", adapted)):
        half = funcformer.load(fn.save(tmp_path / name), dtype=dtype)
        out = half.save(tmp_path / f"{name}-again")
        weights = [load_file(str(f)) for f in out.rglob("*.safetensors")]
        assert weights and {t.dtype for w in weights for t in w.values()} == {torch.float32}
        assert next(half.lm.model.parameters()).dtype == getattr(torch, dtype)  # as loaded
        assert isinstance(funcformer.load(out)(PROMPTS[0], max_new_tokens=4), Generation)
    config = json.loads((tmp_path / "full-again" / "model" / "config.json").read_text())
    assert config["dtype"] == "float32"


def test_lora_adapter_on_the_shared_lm(tiny_lm: Path, fn: generate.TextGenerator,
                                       tmp_path: Path) -> None:
    from funcformer import _lora

    tuned = funcformer.train("generate", PAIRS * 8, backbone=tiny_lm, method="lora", epochs=6,
                             learning_rate=2e-2, batch_size=8, progress=False)
    assert tuned.manifest.method == "lora" and not tuned.manifest.backbone.included
    assert tuned.manifest.adapter["targets"] == sorted(
        f"transformer.h.{i}.attn.{m}" for i in (0, 1) for m in ("c_attn", "c_proj"))
    assert tuned.evaluate(PAIRS)["loss"] < fn.evaluate(PAIRS)["loss"] - 0.5
    shared = {p.data_ptr() for p in fn.lm.model.parameters()}
    base = [p for n, p in tuned.lm.model.named_parameters() if "lora_" not in n]
    assert {p.data_ptr() for p in base} <= shared  # the LM's weights, not a copy
    saved = tuned.save(tmp_path / "lora")
    assert _files(saved) == {"funcformer.json", "adapter/adapter_config.json",
                             "adapter/adapter_model.safetensors"}
    loaded = funcformer.load(saved)
    assert loaded.digest == tuned.digest and loaded.lm.tokenizer is fn.lm.tokenizer
    for options in ({}, {"temperature": 1.0, "seed": 2, "max_new_tokens": 8}):
        assert loaded(PROMPTS, **options) == tuned(PROMPTS, **options)
    merged = funcformer.load(saved, merge_adapter=True)
    assert not _lora.is_view(merged.lm.model)
    ids = torch.tensor([fn.lm.tokenizer("say A: apple")["input_ids"]])
    with torch.inference_mode():
        expected = tuned.lm.model(input_ids=ids).logits
        assert torch.allclose(merged.lm.model(input_ids=ids).logits, expected, atol=1e-4)
    with pytest.raises(TaskError, match="merge_adapter applies to LoRA"):
        funcformer.load(generate.from_backbone(tiny_lm).save(tmp_path / "plain"),
                        merge_adapter=True)


def test_auto_keeps_full_for_few_pairs(tiny_lm: Path, capsys) -> None:
    fn = funcformer.train("generate", PAIRS, backbone=tiny_lm, method="auto", epochs=1,
                          progress=True)
    assert fn.manifest.method == "full" and fn.manifest.backbone.included
    assert fn.manifest.training["method_reason"].startswith("auto: 3 examples")
    assert "method auto -> full" in capsys.readouterr().err


def test_untrained_round_trip_references_the_backbone(tiny_lm: Path, tmp_path: Path) -> None:
    made = generate.from_backbone(tiny_lm, decoding={"max_new_tokens": 7, "stop": ["zz"]})
    saved = made.save(tmp_path / "plain")
    assert _files(saved) == {"funcformer.json"}
    loaded = funcformer.load(saved)
    assert loaded.decoding == made.decoding
    assert loaded(PROMPTS) == made(PROMPTS) and loaded("hello").tokens <= 7
    other = write_tiny_lm(tmp_path / "other", seed=1)
    with pytest.raises(ArtifactError, match="digest"):
        funcformer.load(saved, backbone=other)


def test_an_encoder_backbone_is_refused(tiny_backbone: Path) -> None:
    with pytest.raises(BackboneNotFound, match="not a causal language model"):
        funcformer.train("generate", PAIRS, backbone=tiny_backbone, progress=False)
    with pytest.raises(BackboneNotFound, match="not a causal language model"):
        generate.from_backbone(tiny_backbone)


def test_pickled_weights_and_untrusted_code_are_refused(tiny_lm: Path, tmp_path: Path) -> None:
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_lm, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(BackboneNotFound, match=r"no \*\.safetensors"):
        generate.from_backbone(pickled)
    custom = tmp_path / "custom"
    shutil.copytree(tiny_lm, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="mycustom", architectures=["MyForCausalLM"],
                  auto_map={"AutoConfig": "configuration_my.MyConfig",
                            "AutoModelForCausalLM": "modeling_my.MyForCausalLM"})
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneNotFound, match="trust_remote_code=True"):
        generate.from_backbone(custom)


@pytest.mark.integration
def test_the_default_backbone_is_refused() -> None:
    with pytest.raises(BackboneNotFound, match=r"all-MiniLM-L6-v2.*not a causal language model"):
        funcformer.train("generate", PAIRS, progress=False)


def test_data_errors_name_line_and_field(tiny_lm: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n', "utf-8")
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2: field 'completion' is missing"):
        funcformer.train("generate", jsonl, backbone=tiny_lm, progress=False)
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,completion\nhello,world\n,empty prompt\n", "utf-8")
    with pytest.raises(DataError, match=r"pairs.csv, line 3, field 'prompt'"):
        funcformer.train("generate", csv, backbone=tiny_lm, progress=False)
    with pytest.raises(DataError, match="index 1, field 'completion'"):
        generate.from_backbone(tiny_lm).evaluate([("a", "b"), ("c", 3)])


def test_option_errors(fn: generate.TextGenerator, tiny_lm: Path) -> None:
    for method in ("head", "contrastive"):
        with pytest.raises(TaskError, match=r"'full' \(the default\), 'lora' or 'auto', not"):
            funcformer.train("generate", PAIRS, backbone=tiny_lm, method=method, progress=False)
    with pytest.raises(TaskError, match="Unknown generation option"):
        fn("hello", max_tokens=3)
    with pytest.raises(TaskError, match="temperature"):
        fn("hello", temperature=-1)
    with pytest.raises(TaskError, match="Unknown generation option"):
        fn.stream("hello", beams=2)  # fails on the call, not at the first piece
    with pytest.raises(DataError):
        fn(["hello", ""])


@pytest.mark.parametrize(("options", "words"), [
    ({"max_new_tokens": True}, "max_new_tokens must be a whole number of at least 1"),
    ({"max_new_tokens": 2.0}, "max_new_tokens must be a whole number"),
    ({"temperature": "hot"}, "temperature must be a number of at least 0"),
    ({"temperature": float("inf")}, "temperature must be a number of at least 0"),
    ({"top_p": 0}, "top_p must be a number above 0 and at most 1"),
    ({"seed": "1"}, "seed must be a whole number from 0"),
    ({"seed": True}, "seed must be a whole number from 0"),
    ({"seed": 2 ** 70}, "seed must be a whole number from 0"),  # was torch's overflow
    ({"stop": 5}, "stop must be a string or a list of strings"),
    ({"stop": {"a": 1}}, "stop must be a string or a list of strings"),  # was stop=["a"]
    ({"stop": [""]}, "stop must be non-empty strings"),
    ({"stop": ["\n", "\ud800"]}, "stop '\\ud800' is not valid Unicode"),  # it never matched
    ({"beams": 2}, "Unknown generation option"),
])
def test_decoding_options_are_checked_and_name_the_option(fn: generate.TextGenerator,
                                                          options: dict, words: str) -> None:
    """Each used to pass unchecked (a bool as 1 token, a string seed ignored when greedy) or
    fail in Python's or torch's words; the server reports `options.<name>` from the mark."""
    with pytest.raises(TaskError, match=re.escape(words)) as caught:
        fn("hello", **{"temperature": 0.5, **options})  # sampling: where the seed counts
    assert caught.value.option == next(iter(options))


def test_numpy_decoding_options_are_taken(fn: generate.TextGenerator) -> None:
    """A NumPy seed passed the check, then torch's generator refused it ("an integer is
    required")."""
    import numpy as np

    options = {"temperature": np.float32(0.7), "seed": np.int64(5),
               "max_new_tokens": np.int64(3)}
    assert fn("hello", **options) == fn("hello", temperature=0.7, seed=5, max_new_tokens=3)
    decoding = generate.Decoding().updated(options)
    assert (type(decoding.seed), type(decoding.temperature)) == (int, float)


def test_cli_train_predict_eval(tiny_lm: Path, tmp_path: Path, capsys) -> None:
    import json

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {c}:", "completion": f" {c}{c}"}) + "\n"
                            for c in "abcdefgh"), "utf-8")
    out = tmp_path / "gen"

    from conftest import run_cli as cli

    assert cli("train", "generate", data, "--out", out, "--backbone", tiny_lm, "--epochs",
               "1") == 0
    capsys.readouterr()
    assert cli("predict", out, "say a:", "--set", "max_new_tokens=3") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["input"] == "say a:" and line["tokens"] <= 3 and "text" in line
    assert cli("predict", out, "say a:", "--set", "beams=3") == 1
    assert "Unknown generation option(s): beams" in capsys.readouterr().err
    assert cli("eval", out, data) == 0
    assert "perplexity" in capsys.readouterr().out


def test_a_served_lora_generator_lends_no_embedding_model(tiny_lm: Path, tmp_path: Path) -> None:
    """/v1/embeddings took the causal LM a LoRA generate function references as a sentence
    encoder: it is none, so it is not among the models, and the function itself serves."""
    import asyncio

    from test_server import serving

    funcformer.train("generate", PAIRS, backbone=tiny_lm, method="lora", epochs=1,
                     progress=False).save(tmp_path / "functions" / "gen")

    async def scenario() -> None:
        async with serving(tmp_path / "functions") as (client, _):
            reply = await client.post("/v1/embeddings", json={"model": str(tiny_lm),
                                                              "input": "hello"})
            assert reply.status_code == 404 and "Models here: none" in reply.text, reply.text
            reply = await client.post("/v1/functions/gen", json={
                "inputs": [PROMPTS[0]], "options": {"max_new_tokens": 2}})
            assert reply.status_code == 200, reply.text

    asyncio.run(scenario())


def test_the_server_caps_the_tokens_a_request_asks_for(tiny_lm: Path, tmp_path: Path) -> None:
    """One worker runs every function's batches: 256 prompts of 80 new tokens held a
    one-text classify request for 19 s. Prompts x max_new_tokens is now capped (413)."""
    import asyncio

    from test_server import error_of, serving

    from funcformer._serving import Limits

    funcformer.generator(tiny_lm).save(tmp_path / "functions" / "gen")

    async def scenario() -> list:
        async with serving(tmp_path / "functions",
                           limits=Limits(max_generated_tokens=10)) as (client, _):
            post = client.post
            return [await post("/v1/functions/gen", json={
                        "inputs": PROMPTS[:3], "options": {"max_new_tokens": 4}}),
                    await post("/v1/functions/gen", json={"inputs": PROMPTS[:1]}),
                    await post("/v1/functions/gen", json={
                        "inputs": PROMPTS[:2], "options": {"max_new_tokens": 4}})]

    many, default, ok = asyncio.run(scenario())
    error = error_of(many, 413)
    assert error["field"] == "options.max_new_tokens"
    assert "12 tokens, over the limit of 10" in error["message"]
    assert "--max-generated-tokens" in error["message"]
    error = error_of(default, 413)
    assert error["field"] == "inputs" and "(the function's default, 64)" in error["message"]
    assert ok.status_code == 200, ok.text


def test_a_served_generation_stops_when_its_client_goes(tiny_lm: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch ran to max_new_tokens after its client had disconnected, holding the one worker
    every function's requests wait for; now it stops between two tokens."""
    import asyncio
    import time

    from test_server import serving

    from funcformer import _causal

    funcformer.generator(tiny_lm).save(tmp_path / "functions" / "gen")
    steps = []
    real = _causal.next_tokens

    def slow(*args: Any, **kwargs: Any) -> Any:  # 20 ms a token, counted
        for tokens in real(*args, **kwargs):
            steps.append(time.monotonic())
            time.sleep(0.02)
            yield tokens

    monkeypatch.setattr(_causal, "next_tokens", slow)

    async def scenario() -> Any:
        async with serving(tmp_path / "functions") as (client, _):
            call = client.post("/v1/functions/gen", json={
                "inputs": PROMPTS[:2], "options": {"max_new_tokens": 100}})
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, timeout=0.3)  # the client gives up
            again = await client.post("/v1/functions/gen", json={
                "inputs": PROMPTS[:1], "options": {"max_new_tokens": 3}})
            return len(steps), again

    taken, again = asyncio.run(scenario())
    # the next request waited for the abandoned batch: it ran 100 steps before, then 3
    assert 3 <= taken < 60, taken
    assert again.status_code == 200 and again.json()["outputs"][0]["tokens"] == 3

    # a call without options goes through the result cache: the stopped generation's stub
    # was cached, and the same prompt then got a few tokens for the function's 40
    funcformer.generator(tiny_lm, decoding={"max_new_tokens": 40}).save(
        tmp_path / "functions" / "gen")

    async def cached() -> Any:
        async with serving(tmp_path / "functions") as (client, _):
            call = client.post("/v1/functions/gen", json={"inputs": PROMPTS[:1]})
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, timeout=0.3)
            return await client.post("/v1/functions/gen", json={"inputs": PROMPTS[:1]})

    whole = asyncio.run(cached()).json()["outputs"][0]
    assert (whole["tokens"], whole["finish_reason"]) == (40, "length")


def test_a_generation_stops_when_its_client_closes_the_socket(
        tiny_lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a real socket: uvicorn does not cancel a request whose client went away (httpx's
    in-process transport does), so the server watches for the disconnect itself."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from funcformer import _causal
    from funcformer._server import create_app

    funcformer.generator(tiny_lm).save(tmp_path / "functions" / "gen")
    steps = []
    real = _causal.next_tokens

    def slow(*args: Any, **kwargs: Any) -> Any:  # 20 ms a token, counted
        for tokens in real(*args, **kwargs):
            steps.append(1)
            time.sleep(0.02)
            yield tokens

    monkeypatch.setattr(_causal, "next_tokens", slow)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "functions", reload_interval=0),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        body = json.dumps({"inputs": PROMPTS[:2], "options": {"max_new_tokens": 100}}).encode()
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"POST /v1/functions/gen HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.3)  # then the client closes the connection
        time.sleep(2.2)  # 100 tokens at 20 ms: 2 s
        assert 0 < len(steps) < 50, len(steps)
    finally:
        server.should_exit = True
        thread.join(10)
