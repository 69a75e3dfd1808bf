"""Python packages the ``unetrpp`` child needs inside Slicer, and installing them without breaking Slicer.

PyTorch comes from the PyTorch extension (``PyTorchUtils`` picks the CUDA or CPU build that fits the
computer); everything else from ``Resources/requirements.txt`` through ``slicer.pydeps.pip_ensure``
(Slicer >= 5.11), or ``slicer.util.pip_install`` on older Slicer. Slicer's own SimpleITK and the torch
just installed are never replaced. Qt-free: the widget asks the user before calling :func:`install`.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "REQUIREMENTS_FILE",
    "REQUIRED_IMPORTS",
    "NEVER_REPLACED",
    "distribution_name",
    "missing_imports",
    "read_requirements",
    "required_imports",
    "install",
    "weights_installed",
]

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
# Distributions Slicer (or the PyTorch extension) provides; pip must leave them alone.
NEVER_REPLACED = ("SimpleITK", "torch")
# Import names that differ from the distribution's name (the others import under their own name).
_IMPORT_NAMES = {"scikit-image": "skimage"}


def read_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines removed)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def distribution_name(requirement: str) -> str:
    """The distribution a requirement line names, e.g. ``"scikit-image"`` for ``"scikit-image>=0.22"``."""
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0]


def required_imports(path: str | Path = REQUIREMENTS_FILE) -> tuple[str, ...]:
    """Import names the child process needs: torch, then one per line of the requirements file.

    Derived from the file, so the check and the installation cannot ask for different packages.
    """
    names = [distribution_name(line) for line in read_requirements(path)]
    return ("torch", *(_IMPORT_NAMES.get(name.lower(), name) for name in names))


REQUIRED_IMPORTS = required_imports()


def missing_imports(names: Iterable[str] = REQUIRED_IMPORTS) -> list[str]:
    """The import names among ``names`` that cannot be found in this Python."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def install(requirements_file: str | Path = REQUIREMENTS_FILE) -> None:
    """Install PyTorch (PyTorch extension) and the requirements (inside Slicer only).

    Raises:
        RuntimeError: the PyTorch extension is missing or could not install torch.
    """
    import slicer

    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError as error:
            raise RuntimeError(
                "UNETR++ needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, "
                "restart Slicer and try again"
            ) from error
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled() and torch_logic.installTorch(askConfirmation=False) is None:
            raise RuntimeError("PyTorch could not be installed; see the Python console for details")
    if importlib.util.find_spec("slicer.pydeps") is not None:
        import slicer.pydeps

        requirements = slicer.pydeps.load_requirements(str(requirements_file))
        slicer.pydeps.pip_ensure(requirements, skip_packages=list(NEVER_REPLACED), requester="UNETRPP")
    else:
        slicer.util.pip_install(read_requirements(requirements_file))


def weights_installed(model: str) -> bool:
    """True when the model store has (or bundles) weights for ``model``; False when it cannot tell."""
    try:
        from unetrpp.models.store import installed_weights

        return installed_weights(model) is not None
    except ImportError:  # a dependency of the store is not installed yet
        return False
    except Exception as error:  # an unreadable cache must not break the panel
        logger.warning("Could not check the weights of %s: %s", model, error)
        return False
