"""The public surface: exported names, lazy imports, docstrings."""

from __future__ import annotations

import os
import subprocess
import sys

import funcformer

EXPECTED = [
    "AdaLoRA", "IA3", "PrefixTuning", "PromptTuning",
    "Answer", "ArtifactError", "BackboneNotFound", "DataError", "Embedding", "Engine",
    "Entities", "Explanation", "Function", "FuncformerError", "Generation", "Hit", "Hits",
    "Labels", "LoRA", "MemoryCache", "MissingExtra", "PairScore", "Prediction", "Ranked",
    "SQLiteCache", "SelfTraining", "Span", "Suggestion", "TaskError", "TrainConfig", "ZeroShot",
    "__version__", "distill", "embed", "explain", "generator", "load", "map", "similarity",
    "suggest", "train", "tune", "write_report", "zero_shot",
]


def test_all_is_sorted_and_matches_the_agreed_surface() -> None:
    assert funcformer.__all__ == sorted(funcformer.__all__)
    assert funcformer.__all__ == sorted(EXPECTED)
    for name in funcformer.__all__:
        assert getattr(funcformer, name) is not None


def test_import_is_light_and_has_no_side_effects() -> None:
    code = ("import sys, os, warnings; env = dict(os.environ); filters = list(warnings.filters);"
            "import funcformer;"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules;"
            "assert dict(os.environ) == env and warnings.filters == filters")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_objects_have_docstrings_with_examples() -> None:
    for name in ["Function", "Prediction", "TrainConfig", "FuncformerError", "load", "train",
                 "Engine", "MemoryCache", "ZeroShot", "embed", "similarity", "zero_shot"]:
        doc = getattr(funcformer, name).__doc__ or ""
        assert ">>>" in doc, name


def test_error_hierarchy() -> None:
    for name in ["DataError", "BackboneNotFound", "ArtifactError", "TaskError", "MissingExtra"]:
        assert issubclass(getattr(funcformer, name), funcformer.FuncformerError)


def test_missing_extra_names_the_pip_line() -> None:
    from funcformer._errors import require

    try:
        require("surely_not_a_module_xyz", "report")
    except funcformer.MissingExtra as err:
        assert "pip install 'funcformer[report]'" in str(err)
    else:
        raise AssertionError("MissingExtra not raised")


def test_api_page_covers_every_public_name() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs/api.md").read_text("utf-8")
    missing = [n for n in funcformer.__all__ if n != "__version__" and f"`{n}" not in page]
    assert not missing, f"docs/api.md does not cover: {missing}"


def test_import_bounds_onednn_caches_unless_the_user_set_them() -> None:
    """Set on `import funcformer`, before torch loads (oneDNN reads them on first use)."""
    code = ("import os, sys, funcformer; assert 'torch' not in sys.modules; print("
            "os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'), os.environ['LRU_CACHE_CAPACITY'])")
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY",
                        "LRU_CACHE_CAPACITY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["64", "64"]
    env.update(DNNL_PRIMITIVE_CACHE_CAPACITY="512", LRU_CACHE_CAPACITY="300")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "300"]  # the older name stands; ours would override it
