"""The examples in the package's docstrings run as written."""

import doctest

import fedotp


def test_the_package_docstring_example_runs():
    results = doctest.testmod(fedotp, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 5 and results.failed == 0
