"""Helpers shared by the test modules."""

from __future__ import annotations

import numpy as np


def assert_value_equal(got: object, expected: object) -> None:
    """A decoded feature value equals the expected one, dtype included for arrays."""
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected
