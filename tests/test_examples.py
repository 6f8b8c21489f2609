"""The tutorials' scripts (examples/*.py) run end to end with --quick and print their results.

Each runs in a subprocess, as a reader would run it, on the real all-MiniLM-L6-v2 backbone and
the data in examples/data; it must exit 0, print its key lines and save loadable functions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import funcformer

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[1] / "examples"

EXPECTED = {
    "customer_service.py": (["intents", "faq"], [
        r"Intents: 6 labels, test accuracy 0\.\d+",
        r"FAQ: 16 entries, no-answer threshold 0\.\d+; test accuracy@1",
        r"End to end: 0\.\d+ of the FAQ test queries get the right answer",
        r"\[intent:order_status\]",
        r"reloaded, same replies",
    ]),
    "news_monitor.py": (["news-sentiment"], [
        r"labels \['negative', 'neutral', 'positive'\]",
        r"2024-03-04 14:00 .*ALERT: negative news spike",
        r"Accuracy against the stream's labels: 0\.\d+ \(240 headlines\)",
    ]),
    "recommendation.py": (["book-recommender"], [
        r"Trained a pair function on 64 pairs",
        r"embedding similarity alone +0\.\d+",
        r"pair score \+ similarity \(recommend\) +0\.\d+",
        r"reloaded, same recommendations",
    ]),
    "document_classification.py": (["topics"], [
        r"v1: \['business', 'sports', 'technology'\], method head",
        r"v2: \+ 'health' from 12 examples \(24 remembered ones replayed\)",
        r"v3: \+ 'climate' from 12 examples \(32 remembered ones replayed\)",
        r"v3  [0-9a-f]{12}  parent [0-9a-f]{12} .* 5 labels, new: climate",
    ]),
}


def run_example(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    # The script imports the same funcformer as this test (a checkout's src/ or the install).
    package_root = str(Path(funcformer.__file__).parents[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out)],
                          cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_and_saves_its_functions(script: str, tmp_path: Path) -> None:
    done = run_example(script, tmp_path / "functions")
    assert done.returncode == 0, done.stderr[-3000:]
    saved, patterns = EXPECTED[script]
    for pattern in patterns:
        assert re.search(pattern, done.stdout), f"{pattern!r} not in:\n{done.stdout}"
    assert re.search(r"Done in \d+ s\.", done.stdout)
    for name in saved:
        assert funcformer.load(tmp_path / "functions" / name).manifest.digest


def test_every_example_is_tested_and_documented() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)
    index = (Path(__file__).parents[1] / "docs/tutorials/README.md").read_text("utf-8")
    for script in scripts:
        assert f"`{script}`" in index, script
