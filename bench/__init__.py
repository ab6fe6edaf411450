"""Benchmarks of Adapter Studio against the anchors of issue 6: scripts that print a table and write JSON.

Every figure that decides a goal is a ratio of two timings taken in the same run, interleaved round by round
(A, B, A, B, ...), so a machine shared with other jobs still gives a true answer. Run them with

    python -m bench                      # every benchmark, on the default pipelines
    python -m bench switch memory        # some of them
    python -m bench --quick              # tiny N, one repeat, tiny pipeline: what tests/test_bench.py runs

See docs/BENCHMARKS.md for the results, the machine and the anchors.
"""
