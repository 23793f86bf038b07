"""Every public function and class has a docstring; model code states its equations."""
import importlib
import inspect
import pkgutil

import minitheory

MODULES = [importlib.import_module(m.name)
           for m in pkgutil.walk_packages(minitheory.__path__, "minitheory.")
           if not m.name.endswith("__main__")]
EQUATION_MODULES = ("rank_growth.reference", "rank_growth.model", "rank_growth.incremental",
                    "rank_growth.training", "lowrank_sparse.reference", "lowrank_sparse.model",
                    "lowrank_sparse.analysis", "sparse_bigrams.reference", "sparse_bigrams.model",
                    "sparse_bigrams.training", "sparse_bigrams.population", "primitives")


def _public(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


def test_every_public_function_and_class_is_documented():
    missing = [f"{m.__name__}.{name}" for m in MODULES for name, obj in _public(m)
               if len(inspect.getdoc(obj) or "") < 20]
    assert not missing, f"undocumented: {missing}"
    assert all(len(m.__doc__ or "") > 100 for m in MODULES), "every module says what it is"


def test_model_code_states_its_equations():
    # the module docstring or each public function of the model modules carries a formula
    for m in MODULES:
        if m.__name__.removeprefix("minitheory.") not in EQUATION_MODULES:
            continue
        assert ":math:" in m.__doc__ or ".. math::" in m.__doc__ or "code-block" in m.__doc__, m
        for name, obj in _public(m):
            if inspect.isfunction(obj) and ("loss" in name or "grad" in name):
                doc = inspect.getdoc(obj)
                assert "math" in doc or "=" in doc, f"{m.__name__}.{name} states no equation"
