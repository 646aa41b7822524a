"""The conventions of DESIGN.md, enforced over ``jaxsr.__all__``.

- every public name resolves and has a docstring;
- every parameter with a default is keyword-only (options are keyword-only,
  arrays positional), as dm_pix enforces;
- a function that samples takes ``key`` as its first parameter.
"""

from __future__ import annotations

import inspect

import pytest

import jaxsr

PUBLIC = sorted(jaxsr.__all__)
# jaxsr.nn, jaxsr.smlm, jaxsr.fusion and jaxsr.parallel keep their own namespaces (names like ``fit`` and ``denoise`` read better qualified); its
# public names follow the same conventions.
OBJECTS = [(name, getattr(jaxsr, name)) for name in PUBLIC] + [
    (f"nn.{name}", getattr(jaxsr.nn, name)) for name in sorted(jaxsr.nn.__all__)
] + [
    (f"{sub}.{name}", getattr(getattr(jaxsr, sub), name))
    for sub in ("smlm", "fusion", "parallel") for name in sorted(getattr(jaxsr, sub).__all__)
]


def test_version():
    assert isinstance(jaxsr.__version__, str) and jaxsr.__version__.count(".") >= 1


def test_all_names_resolve():
    assert len(PUBLIC) == len(set(PUBLIC))
    for name in PUBLIC:
        assert hasattr(jaxsr, name), name


@pytest.mark.parametrize("sub", ["nn", "smlm", "fusion", "parallel"])
def test_qualified_subpackage_names_resolve(sub):
    module = getattr(jaxsr, sub)
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("name,obj", OBJECTS, ids=[n for n, _ in OBJECTS])
def test_public_has_docstring(name, obj):
    if inspect.ismodule(obj) or not callable(obj):
        return
    assert inspect.getdoc(obj), f"{name} has no docstring"


def _functions():
    for name, obj in OBJECTS:
        if inspect.isfunction(obj):
            yield name, obj


@pytest.mark.parametrize("name,fn", list(_functions()))
def test_options_are_keyword_only(name, fn):
    sig = inspect.signature(fn)
    for p in sig.parameters.values():
        if p.default is not inspect.Parameter.empty:
            assert p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD), (
                f"{name}: parameter '{p.name}' has a default but is not keyword-only"
            )


@pytest.mark.parametrize("name,fn", list(_functions()))
def test_key_comes_first(name, fn):
    params = list(inspect.signature(fn).parameters)
    if "key" in params:
        assert params[0] == "key", f"{name}: 'key' must be the first parameter"


@pytest.mark.parametrize("sub", ["optics", "forward", "simulate", "metrics", "io", "deconv"])
def test_subpackage_names_reexported(sub):
    module = getattr(jaxsr, sub)
    missing = set(module.__all__) - set(jaxsr.__all__)
    assert not missing, f"jaxsr.{sub} names not re-exported at the top level: {sorted(missing)}"
    for name in module.__all__:
        assert getattr(jaxsr, name) is getattr(module, name)
