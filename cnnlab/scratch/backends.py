"""The scratch engine's kernel backends, by name: the one table of them.

    get_backend("numpy")   plain NumPy kernels (cnnlab.scratch.kernels)
    get_backend("numba")   the same loops compiled by Numba (cnnlab.scratch.numba_kernels), the default
"""

from __future__ import annotations

from types import SimpleNamespace

from cnnlab.errors import CnnlabError

BACKENDS = ("numba", "numpy")
DEFAULT_BACKEND = "numba"
_cache: dict[str, SimpleNamespace] = {}


def check_backend(name: str | None) -> str:
    name = (name or DEFAULT_BACKEND).lower()
    if name not in BACKENDS:
        raise CnnlabError(f"unknown scratch backend '{name}': choose one of {', '.join(BACKENDS)}")
    return name


def get_backend(name: str | None = "numpy") -> SimpleNamespace:
    name = check_backend(name or "numpy")
    if name not in _cache:
        if name == "numba":
            from cnnlab.scratch import numba_kernels  # imported on demand: Numba is slow to import

            _cache[name] = numba_kernels.backend()
        else:
            from cnnlab.scratch import kernels

            _cache[name] = kernels.backend()
    return _cache[name]
