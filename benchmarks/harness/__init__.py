"""What the benchmarks, scripts and tests of this repository share, kept out of the installed package.

``server``: ``livt-serve`` in a child process on a free loopback port; ``batchrun``: several
``livt-train`` commands side by side; ``runs``: whether a run folder is finished and reusable.
A benchmark imports it as ``harness`` (its folder is on the path); scripts put ``benchmarks/`` on
the path, and pytest does through ``pythonpath`` in ``pyproject.toml``.
"""
