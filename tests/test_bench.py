"""Every benchmark script stays runnable: each runs in its quick mode (tiny N, one round, tiny pipeline) and must
print a table and write its JSON. Timings are not asserted: they belong to docs/BENCHMARKS.md, not to CI."""

import json

import pytest

from bench.__main__ import BENCHMARKS, main

# plot reads resident's JSON, so it runs after it; the rest in the order of the issue.
ORDER = ["resident", "plot", "generation", "load", "api", "coldstart", "memory", "text", "textbatch", "profile",
         "turns", "gpu", "compile", "realsize"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One results folder for the module: the tiny models built in it are shared by every benchmark."""
    return tmp_path_factory.mktemp("bench-results")


def test_every_benchmark_is_covered():
    assert sorted(ORDER) == sorted(BENCHMARKS)


@pytest.mark.parametrize("name", ORDER)
def test_benchmark_runs_in_quick_mode(name, out, capsys):
    tiny = ["--tiny"] if name == "gpu" else []  # gpu: every family's tiny pipeline on the CPU (no CUDA needed)
    assert main([name, "--quick", *tiny, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    if name == "plot":
        assert (out / "switch_latency.png").stat().st_size > 1000
        return
    assert "|---|" in printed  # a Markdown table
    data = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name
    assert data["environment"]["quick"] is True
    for goal in data.get("goals", []):
        assert {"goal", "measured", "passed"} <= set(goal)


def test_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["nonsense"])
    assert "unknown benchmark" in capsys.readouterr().err
