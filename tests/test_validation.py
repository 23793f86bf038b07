import numpy as np
import pytest

from minitheory.validation import check_array, check_float, check_int


def test_messages_name_the_parameter_and_range():
    with pytest.raises(ValueError, match=r"alpha must be in \(0.0, 1.0\), got 1.0"):
        check_float("alpha", 1.0, low=0.0, high=1.0, low_open=True, high_open=True)
    with pytest.raises(ValueError, match="eta must be finite"):
        check_float("eta", float("nan"), low=0.0)
    with pytest.raises(TypeError, match="eta must be a real number"):
        check_float("eta", "0.1")
    with pytest.raises(TypeError, match="n must be an integer"):
        check_int("n", 2.0)
    with pytest.raises(TypeError, match="n must be an integer"):
        check_int("n", True)
    with pytest.raises(ValueError, match=r"n must be in \[1, inf\), got 0"):
        check_int("n", 0, low=1)
    with pytest.raises(ValueError, match=r"n must be in \(-inf, 3\], got 4"):
        check_int("n", 4, high=3)
    assert check_float("x", 0.5, low=0, high=1) == 0.5 and check_int("k", np.int64(3)) == 3


def test_an_unbounded_side_is_stated_open_so_inf_is_never_promised():
    # "--eta -1" and "--eta inf" state the same interval, and it excludes inf
    msgs = []
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError) as info:
            check_float("eta", bad, low=0.0, low_open=True)
        msgs.append(str(info.value))
    assert all("(0.0, inf)" in m for m in msgs) and not any("inf]" in m for m in msgs)
    with pytest.raises(ValueError, match=r"\(-inf, 1.0\]"):
        check_float("x", -float("inf"), high=1.0)


def test_arrays():
    with pytest.raises(ValueError, match=r"X must have shape \(\*, 4\)"):
        check_array("X", np.ones((2, 3)), shape=(None, 4))
    with pytest.raises(ValueError, match="X must contain only finite"):
        check_array("X", [1.0, np.inf])
    with pytest.raises(ValueError, match="ndim"):
        check_array("X", np.ones(3), ndim=2)
    with pytest.raises(TypeError, match="X must be an array of real numbers"):
        check_array("X", ["a"])
