"""The benchmark stays in step with the models (it is run by hand, so nothing else would notice)."""
import math

import numpy as np
import pytest

from minitheory import bench

SMALL = [c for c in bench.CASES if "population" not in c[0] and "64" not in c[1] and "1024" not in c[1]]


@pytest.mark.parametrize("model_name, size, make", SMALL, ids=[f"{m} {s}" for m, s, _ in SMALL])
def test_cases_run_and_list_valid_products(model_name, size, make):
    case = make()
    loss, grads = case.lag()
    assert np.all(np.isfinite(loss)) and case.flops > 0
    # the reference twin computes the same loss and gradients at the same point
    loss_ref, grads_ref = case.reference()
    np.testing.assert_allclose(loss_ref, loss, rtol=1e-10)
    for k in grads:
        np.testing.assert_allclose(grads_ref[k], grads[k], rtol=1e-9, atol=1e-12, err_msg=k)
    case.step()
    for sa, sb in case.products:              # every listed product is a valid matmul
        np.zeros(sa) @ np.zeros(sb)


def test_products_rate_counts_flops():
    assert math.isnan(bench.products_rate([], 1))
    assert bench.products_rate([((64, 64), (64, 64)), ((3, 8, 5), (5, 2))], 1) > 0


def test_population_case_runs():
    case = bench.case_population(20, T=1000)
    G = case.lag()
    assert np.all(np.isfinite(G)) and case.products == [] and case.reference_of == "step"
    case.step()
    V, A = case.reference()
    assert np.all(np.isfinite(V)) and np.all(np.isfinite(A))


def test_run_axis_speedup_reports_both_timings():
    out = bench.run_axis_speedup(1, R=2)
    assert out["runs"] == 2 and out["us_per_run_batched"] > 0 and out["us_per_run_sequential"] > 0
    assert out["speedup"] == pytest.approx(out["us_per_run_sequential"] / out["us_per_run_batched"])


def test_bench_imports_no_private_demo_module_and_finds_every_demo():
    import ast
    import inspect
    from minitheory.demos.__main__ import DEMOS
    tree = ast.parse(inspect.getsource(bench))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "_common" in m or "__main__" in m], imported
    assert set(bench.demo_names()) == set(DEMOS)


def test_bench_records_the_blas_library_and_its_threads():
    info = bench.blas_info()
    assert info["name"]                                   # e.g. scipy-openblas
    assert info["threads"] is None or info["threads"] >= 1
    assert isinstance(info["env"], dict)
    table = bench.format_table(["a", "bb"], [["1", "22"], ["333", "4"]]).splitlines()
    assert table == ["  a  bb", "---  --", "  1  22", "333   4"]
