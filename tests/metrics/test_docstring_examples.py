"""The usage examples in the metrics' docstrings run as written (so they cannot drift from the code)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from grain_pl.weights.lpips_alexnet import find_alexnet_weights

# Modules whose docstrings hold `>>>` examples.
MODULES_WITH_EXAMPLES = ("grain_pl.metrics.image_quality",)


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(module_name: str) -> None:
    if find_alexnet_weights() is None:
        pytest.skip("LPIPS AlexNet weights are not prepared (make install prepares them)")
    module = importlib.import_module(module_name)
    examples = [test for test in doctest.DocTestFinder().find(module) if test.examples]
    assert examples, f"{module_name} has no docstring examples any more; remove it from MODULES_WITH_EXAMPLES"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in examples:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} docstring examples in {module_name} failed"
