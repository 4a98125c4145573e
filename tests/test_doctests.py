"""The docstring examples of every labelloop module, run on the installed package (as `labelloop.<module>`).

pytest's --doctest-modules would import the files a second time under names of its own making (the
repository root is the package), and a labeler spec registered from such a copy would replace the
real one; running them here keeps one copy of each module.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import labelloop

MODULES = sorted(name for package in (labelloop.programs, labelloop.labelers, labelloop.flows)
                 for _, name, _ in pkgutil.walk_packages(package.__path__, f"{package.__name__}."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()


def test_the_examples_are_found():
    found = sum(len(t.examples) for name in MODULES for t in doctest.DocTestFinder().find(importlib.import_module(name)))
    assert len(MODULES) >= 30 and found >= 45, (len(MODULES), found)
