"""Python packages the ``unetrpp`` child needs inside Slicer, and installing them without breaking Slicer.

PyTorch comes from the PyTorch extension (``PyTorchUtils`` picks the CUDA or CPU build that fits the
computer), asked for with the core's torch range. Everything else comes from ``Resources/requirements.txt``
through ``slicer.packaging.pip_ensure`` (Slicer >= 5.12), or ``slicer.util.pip_install`` on older Slicer,
always with a constraints file that pins the torch, numpy and SimpleITK already installed: without it pip
may replace the torch build the PyTorch extension chose (monai 1.6 asks for torch>=2.8) or backtrack to
monai 1.4 and downgrade Slicer's numpy below 2. Qt-free: the widget asks the user before :func:`install`.

OpenVINO, the faster CPU backend, is optional: ``Resources/requirements-openvino.txt``, offered by the panel
where the CPU runs the network (:func:`cpu_backend_offer`) and installed the same way
(:func:`install_openvino`). The child process is a fresh Python whose ``--backend auto`` (the CLI's
default; the panel passes no ``--backend``) picks it up without a restart.

MONAI stays a dependency rather than being rewritten here: the network's parameter names (and so the
official checkpoints' keys) are MONAI's block names, training and evaluation use MONAI throughout, and with
the installed torch and numpy pinned pip picks a MONAI release that works with both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REQUIREMENTS_FILE",
    "REQUIRED_IMPORTS",
    "NEVER_REPLACED",
    "CpuBackendOffer",
    "DependencyGate",
    "cpu_backend_offer",
    "cpu_runs_the_network",
    "distribution_name",
    "missing_imports",
    "read_requirements",
    "required_imports",
    "install",
    "install_openvino",
    "installed_pins",
    "OPENVINO_REQUIREMENTS_FILE",
    "openvino_installed",
    "TORCH_REQUIREMENT",
    "weights_installed",
]

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
OPENVINO_REQUIREMENTS_FILE = REQUIREMENTS_FILE.with_name("requirements-openvino.txt")
# Distributions Slicer (or the PyTorch extension) provides; pip must leave them alone.
NEVER_REPLACED = ("SimpleITK", "torch", "numpy")
# The core's torch range (pyproject.toml), passed to the PyTorch extension when it installs torch.
TORCH_REQUIREMENT = ">=2.2,<3"
REQUESTER = "UNETR++"
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
    """Install PyTorch (PyTorch extension), then the requirements without touching torch, numpy or
    SimpleITK (inside Slicer only; the widget has asked the user already).

    Raises:
        RuntimeError: the PyTorch extension is missing or could not install torch.
        subprocess.CalledProcessError: pip failed (its output is in Slicer's Python console).
    """
    if importlib.util.find_spec("torch") is None:
        _install_torch()
    _install_pinned(Path(requirements_file))


def install_openvino() -> None:
    """Install the optional OpenVINO backend with torch, numpy and SimpleITK pinned as for :func:`install`
    (inside Slicer only; the widget has asked the user already).

    Raises:
        RuntimeError: one line saying why it failed, for the panel to show (pip's cause chained; pip's
            output is in Slicer's Python console). The module keeps working with PyTorch.
    """
    try:
        _install_pinned(OPENVINO_REQUIREMENTS_FILE)
    except Exception as error:  # pip, Slicer's packaging or the file system: each ends the same way
        raise RuntimeError(f"OpenVINO could not be installed: {_failure_reason(error)}") from error
    if not openvino_installed():  # e.g. pip_ensure skips installing in Slicer's testing mode
        raise RuntimeError("OpenVINO could not be installed: this Python still cannot import it")


def _failure_reason(error: Exception) -> str:
    """One line for the panel: pip's exit status (its output is in the console), else the first line."""
    if isinstance(error, subprocess.CalledProcessError):
        return f"pip exited with status {error.returncode}; its output is in the Python console"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def openvino_installed() -> bool:
    """True when this Python can import OpenVINO, so the child's ``--backend auto`` runs it on the CPU.

    Not ``unetrpp.network.openvino_runtime.openvino_available``: importing that module imports torch,
    which the panel keeps out of Slicer's own process.
    """
    return not missing_imports(("openvino",))


@dataclass(frozen=True)
class CpuBackendOffer:
    """What the panel shows next to the device: the CPU's backend, and whether to offer OpenVINO."""

    backend: str
    offer_install: bool


def cpu_runs_the_network(cuda_available: bool, force_cpu: bool) -> bool:
    """Whether a run goes to the CPU: CPU chosen, or no CUDA (the panel's offer and its timings agree)."""
    return force_cpu or not cuda_available


def cpu_backend_offer(cuda_available: bool, force_cpu: bool, openvino_installed: bool) -> CpuBackendOffer:
    """The CPU backend's name, and the install button only where the CPU runs the network (the GPU
    always runs torch) and OpenVINO is missing."""
    return CpuBackendOffer(
        backend="OpenVINO" if openvino_installed else "PyTorch",
        offer_install=cpu_runs_the_network(cuda_available, force_cpu) and not openvino_installed,
    )


def _install_pinned(requirements_file: Path) -> None:
    """Install a requirements file with what :data:`NEVER_REPLACED` names pinned as installed."""
    with tempfile.TemporaryDirectory(prefix="unetrpp-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("\n".join(installed_pins(NEVER_REPLACED)) + "\n", encoding="utf-8")
        _install_requirements(requirements_file, constraints)
    importlib.invalidate_caches()


def installed_pins(distributions: Iterable[str]) -> list[str]:
    """``name==version`` for each of ``distributions`` that is installed (local versions such as
    ``+cu121`` included, so pip keeps exactly that build)."""
    pins = []
    for name in distributions:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def _install_torch() -> None:
    # PyTorchUtilsLogic.installTorch(askConfirmation=False, forceComputationBackend=None,
    # torchVersionRequirement=None, ...) returns the torch module or None (SlicerPyTorch,
    # PyTorchUtils/PyTorchUtils.py).
    try:
        import PyTorchUtils
    except ImportError as error:
        raise RuntimeError(
            "UNETR++ needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, "
            "restart Slicer and try again"
        ) from error
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None:
        raise RuntimeError("PyTorch could not be installed; see the Python console for details")


def _install_requirements(requirements_file: Path, constraints: Path) -> None:
    import slicer

    if importlib.util.find_spec("slicer.packaging") is not None:
        # Slicer >= 5.12: Base/Python/slicer/packaging.py (v5.12.3) defines load_requirements(path),
        # which skips whole-line comments only (so no inline comments in our files), and
        # pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, ...,
        # requester=None, ...), which installs only what is missing and raises CalledProcessError.
        import slicer.packaging

        requirements = slicer.packaging.load_requirements(requirements_file)
        slicer.packaging.pip_ensure(
            requirements, constraints=constraints, prompt_install=False, requester=REQUESTER
        )
    else:
        # Slicer 5.6-5.10: slicer.util.pip_install(list) runs "pip install" with the list as arguments
        # and raises CalledProcessError when pip fails (Base/Python/slicer/util.py, v5.6.2:
        # _executePythonModule, logProcessOutput).
        slicer.util.pip_install(["-r", str(requirements_file), "-c", str(constraints)])


class DependencyGate:
    """Decides, each time the panel needs the packages, whether to ask, install, or offer a restart.

    Declining once must not lock installing out until Slicer restarts: the next click asks again. Once
    installed in this session, packages that are still not importable need a restart, which is offered.
    """

    def __init__(
        self,
        missing: Callable[[], list[str]] = missing_imports,
        install_packages: Callable[[], None] = install,
    ) -> None:
        self._missing = missing
        self._install = install_packages
        self.installed_this_session = False

    def ensure(
        self,
        confirm_install: Callable[[list[str]], bool],
        confirm_restart: Callable[[list[str]], bool],
        restart: Callable[[], object],
    ) -> bool:
        """True when everything is importable (after installing, if the user agreed)."""
        missing = self._missing()
        if not missing:
            return True
        if not self.installed_this_session:
            if not confirm_install(missing):
                return False
            self._install()
            self.installed_this_session = True
            missing = self._missing()
            if not missing:
                return True
        if confirm_restart(missing):
            restart()
        return False


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
