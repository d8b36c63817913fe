"""The benchmark scripts (a package, so that they share one harness: benchmarks/harness.py).

Run each from the repository root as ``python benchmarks/<name>.py``; every script's first lines put the checkout on
``sys.path`` the same way, then import ``benchmarks.harness``. benchmarks/RESULTS.md maps each published claim to
its script, its section and the test that runs the script's code on the tiny kit.
"""
