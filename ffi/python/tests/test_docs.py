"""The examples in the docstrings run as written."""

import doctest

import fedotp
import fedotp._fedotp


def test_the_docstring_examples_run():
    attempted = 0
    for module in (fedotp, fedotp._fedotp):
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert results.failed == 0
        attempted += results.attempted
    assert attempted > 30
