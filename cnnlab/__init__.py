"""cnnlab: design, train, measure and cost small convolutional image classifiers."""

__version__ = "0.1.0"


def _runtime_defaults():
    """Settings that Numba reads when it is imported, made here, before cnnlab imports it. A value
    the user set in the environment is kept.

    - NUMBA_THREADING_LAYER=workqueue: every cnnlab Numba kernel (the fused loader, the scratch
      engine's) on Numba's own thread pool, whichever is imported first. Numba's OpenMP layer would
      share torch's OpenMP runtime and, at its first launch, reset torch's thread count
      (omp_set_num_threads) and turn nested parallelism on; the work queue leaves torch alone.
    - NUMBA_CACHE_DIR=numba/ in cnnlab's cache (cnnlab.envinfo.user_cache_dir; default
      ~/.cache/cnnlab/numba): compiled kernels go to the user's cache, not into __pycache__ next to
      the installed source.
    """
    import os
    import sys

    from cnnlab.envinfo import user_cache_dir

    env = os.environ
    env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    if not env.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = str(user_cache_dir("numba"))
    if "numba" in sys.modules:  # imported before cnnlab: it has read its environment already
        import numba.core.config

        numba.core.config.reload_config()


_runtime_defaults()
