"""What to install, as exact commands, and the error that names them when something is missing.

``pip install -e .`` installs everything the harness imports except ``image-reward``: its declared pins
(``timm==0.6.13``, ...) conflict with open_clip 3, so it can only be installed with ``--no-deps``
(``requirements/nodeps.txt``, which also holds ``hpsv2x``, the reference that ``scorer-speed`` and the
tests compare against; the ``hpsv2`` metrics themselves run on open_clip). The commands are run from the harness checkout (they
read ``requirements/``); README "Install on a CUDA machine" shows them in order.
"""

from __future__ import annotations

import importlib.util

from harness.errors import HarnessError

#: the harness and its resolvable dependencies, at the locked versions
INSTALL_HARNESS = "pip install -c requirements/lock.txt -e ."
#: the packages that must be installed with --no-deps (image-reward 1.5, hpsv2x 1.2.0)
INSTALL_NODEPS = "pip install --no-deps -c requirements/lock.txt -r requirements/nodeps.txt"

#: import name -> distribution name, for the packages whose names differ
DISTRIBUTIONS = {"ImageReward": "image-reward", "hpsv2": "hpsv2x", "PIL": "pillow", "yaml": "pyyaml",
                 "google": "protobuf", "open_clip": "open_clip_torch"}


def distribution(module: str) -> str:
    """The PyPI name that provides top-level import ``module`` (``ImageReward`` -> ``image-reward``)."""
    top = module.split(".")[0]
    return DISTRIBUTIONS.get(top, top)


def install_command(module: str) -> str:
    """The exact command that installs the distribution providing ``module``, at its locked version."""
    dist = distribution(module)
    if dist in ("image-reward", "hpsv2x"):
        return INSTALL_NODEPS
    return f"pip install -c requirements/lock.txt {dist}"


def missing(module: str, needed_for: str) -> HarnessError:
    """The error for a module that is not installed: what needs it and the command that installs it."""
    dist = distribution(module)
    how = ("it cannot come from `pip install -e .` because its declared pins conflict with open_clip 3; "
           if dist in ("image-reward", "hpsv2x") else "")
    return HarnessError(
        f"{needed_for} needs the Python package {dist} (module {module.split('.')[0]}), which is not installed; "
        f"{how}run `{install_command(module)}` in the harness checkout (`make setup` does this)"
    )


def require(module: str, needed_for: str) -> None:
    """Raise :func:`missing`'s error unless top-level ``module`` can be imported (found, not imported)."""
    top = module.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except ValueError:  # in sys.modules with no spec, or set to None (import blocked)
        found = False
    if not found:
        raise missing(top, needed_for)
