"""The public surface: exported names, lazy imports, docstrings."""

from __future__ import annotations

import os
import platform
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


CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY",
                   "LRU_CACHE_CAPACITY")


def _without_cache_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}


def test_import_is_light_and_has_no_other_side_effects() -> None:
    """Nothing heavy loads and nothing changes but the cache caps of
    `_bound_onednn_caches` (x86: both; elsewhere oneDNN's only)."""
    code = ("import sys, os, platform, warnings; env = dict(os.environ);"
            "filters = list(warnings.filters); import funcformer;"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules;"
            "added = {k: v for k, v in os.environ.items() if env.get(k) != v};"
            "assert set(env) <= set(os.environ) and warnings.filters == filters;"
            "x86 = platform.machine().lower() in ('x86_64', 'amd64', 'i386', 'i686');"
            "assert added == {'ONEDNN_PRIMITIVE_CACHE_CAPACITY': '64',"
            " **({'LRU_CACHE_CAPACITY': '64'} if x86 else {})}, added")
    done = subprocess.run([sys.executable, "-c", code], env=_without_cache_variables(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


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
    """Set on `import funcformer`, before torch loads (oneDNN reads them on first use); each
    one the user set stands, the older DNNL_ name included."""
    code = ("import os, sys, funcformer; assert 'torch' not in sys.modules; print("
            "*(os.environ.get(k, '-') for k in ('ONEDNN_PRIMITIVE_CACHE_CAPACITY', "
            "'DNNL_PRIMITIVE_CACHE_CAPACITY', 'LRU_CACHE_CAPACITY')))")

    def seen(**user: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", code],
                              env={**_without_cache_variables(), **user},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    assert seen() == ["64", "-", "64" if x86 else "-"]  # ideep's own default elsewhere is 1
    assert seen(DNNL_PRIMITIVE_CACHE_CAPACITY="512")[:2] == ["-", "512"]  # ours would win
    assert seen(ONEDNN_PRIMITIVE_CACHE_CAPACITY="7")[0] == "7"
    assert seen(LRU_CACHE_CAPACITY="300") == ["64", "-", "300"]
