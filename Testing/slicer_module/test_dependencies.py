"""What the module installs into Slicer's Python, and how it checks imports and weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from UNETRPPSegmentLib import dependencies

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (supported): the backport, in the test extra for that version
    import tomli as tomllib


def _distribution_names(requirements: list[str]) -> set[str]:
    return {dependencies.distribution_name(requirement).lower() for requirement in requirements}


def test_requirements_never_replace_what_slicer_provides():
    requirements = dependencies.read_requirements()
    names = _distribution_names(requirements)
    assert names, "requirements.txt is empty"
    assert not names & {name.lower() for name in dependencies.NEVER_REPLACED}
    assert "vtk" not in names  # Slicer's own VTK


def test_checked_imports_are_derived_from_the_requirements(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nmonai>=1.4\nscikit-image>=0.22 ; python_version >= '3.10'\nsafetensors\n")
    assert dependencies.required_imports(path) == ("torch", "monai", "skimage", "safetensors")
    assert len(dependencies.REQUIRED_IMPORTS) == len(dependencies.read_requirements()) + 1


def test_every_checked_import_names_a_module_that_exists():
    # The test environment has everything installed, so a wrong import name shows up as "missing".
    assert dependencies.missing_imports() == []


def test_requirements_equal_the_cores_runtime_dependencies_plus_psutil():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    provided = {name.lower() for name in dependencies.NEVER_REPLACED}
    core = [r for r in project["dependencies"] if dependencies.distribution_name(r).lower() not in provided]
    # Same lines, versions included: the child in Slicer runs the same core as `pip install .` gives.
    assert sorted(dependencies.read_requirements()) == sorted([*core, "psutil>=5.9"])


def test_read_requirements_drops_comments_and_blank_lines(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# a comment\n\nmonai>=1.4  # inline\n  scipy\n", encoding="utf-8")
    assert dependencies.read_requirements(path) == ["monai>=1.4", "scipy"]


def test_missing_imports_names_only_the_missing_ones():
    assert dependencies.missing_imports(["json", "no_such_package_unetrpp"]) == ["no_such_package_unetrpp"]
    assert dependencies.missing_imports() == []  # this test environment has everything the child needs


def test_weights_installed_answers_false_for_an_empty_store_and_unknown_models(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    assert dependencies.weights_installed("synapse") is False
    assert dependencies.weights_installed("no-such-model") is False


def test_weights_installed_answers_true_for_imported_and_bundled_weights(tmp_path, monkeypatch):
    # The panel offers a download exactly when this is False (UNETRPPSegment.py), so the True answer
    # matters as much: weights imported into the store, and the demo model that ships with the package.
    import dataclasses

    import torch
    from unetrpp.models import save_model, store
    from unetrpp.models.registry import find_card
    from unetrpp.network import build_network

    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    assert dependencies.weights_installed("synapse") is False
    torch.manual_seed(0)
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4, deep_supervision=False)
    # A network smaller than the synapse card's installs only as a .unetrpp file (it carries its own
    # architecture); an official checkpoint must have the card's sizes.
    synapse = find_card("synapse")
    card = dataclasses.replace(synapse, plans=dataclasses.replace(synapse.plans, patch_size_zyx=(16, 32, 32)))
    store.import_weights(save_model(tmp_path / "tiny.unetrpp", network, card), "synapse")
    assert dependencies.weights_installed("synapse") is True
    assert dependencies.weights_installed("acdc") is False  # only the model that was imported
    assert dependencies.weights_installed("demo") is True  # bundled: nothing to download
    store.remove("synapse")
    assert dependencies.weights_installed("synapse") is False


# ---- install(): our side of the contract with Slicer's packaging API and the PyTorch extension -------
# The stand-ins below take exactly the parameters the cited Slicer files define, so a call with a name
# those APIs lack fails here with TypeError, as it would in Slicer.


def _installed_pins() -> list[str]:
    import numpy
    import SimpleITK
    import torch

    versions = {"SimpleITK": SimpleITK.__version__, "torch": torch.__version__, "numpy": numpy.__version__}
    return [f"{name}=={version}" for name, version in versions.items()]


@pytest.fixture
def slicer_packaging(monkeypatch):
    """A recording ``slicer.packaging`` (Slicer >= 5.12, Base/Python/slicer/packaging.py)."""
    import importlib.machinery
    import types

    import slicer

    calls: list[dict] = []
    module = types.ModuleType("slicer.packaging")
    module.__spec__ = importlib.machinery.ModuleSpec("slicer.packaging", None)

    def load_requirements(path):
        return {"requirements_file": Path(path)}

    def pip_ensure(
        requirements,
        constraints=None,
        skip_packages=None,
        prompt_install=True,
        prompt_restart=True,
        requester=None,
        skip_in_testing=True,
        show_progress=True,
    ):
        calls.append(
            {
                **requirements,
                "constraints": Path(constraints).read_text(encoding="utf-8").split(),
                "skip_packages": skip_packages,
                "prompt_install": prompt_install,
                "requester": requester,
            }
        )

    module.load_requirements, module.pip_ensure = load_requirements, pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", module)
    monkeypatch.setattr(slicer, "packaging", module, raising=False)
    return calls


@pytest.fixture
def slicer_pip_install(monkeypatch):
    """A recording ``slicer.util.pip_install(requirements)`` (Slicer 5.6-5.10, Base/Python/slicer/util.py
    v5.6.2); it raises ``error`` when a test sets one, as pip's failure reaches the caller."""
    import importlib.util
    import types

    import slicer

    assert importlib.util.find_spec("slicer.packaging") is None  # slicer-core ships no packaging module
    recorded = types.SimpleNamespace(calls=[], error=None)

    def pip_install(requirements):
        constraints = Path(requirements[requirements.index("-c") + 1]).read_text(encoding="utf-8")
        recorded.calls.append([*requirements[:3], *constraints.split()])
        if recorded.error is not None:
            raise recorded.error

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    return recorded


# What the panel installs: the requirements (Segment asks) and the optional OpenVINO (its own button).
INSTALLERS = pytest.mark.parametrize(
    ("install", "requirements_file"),
    [
        (dependencies.install, dependencies.REQUIREMENTS_FILE),
        (dependencies.install_openvino, dependencies.OPENVINO_REQUIREMENTS_FILE),
    ],
    ids=["requirements", "openvino"],
)


@INSTALLERS
def test_install_uses_slicer_packaging_with_the_installed_torch_numpy_and_simpleitk_pinned(
    install, requirements_file, slicer_packaging
):
    install()
    assert slicer_packaging == [
        {
            "requirements_file": requirements_file,
            "constraints": _installed_pins(),
            "skip_packages": None,  # Slicer documents skip_packages as a discouraged workaround
            "prompt_install": False,  # the panel asked already
            "requester": "UNETR++",
        }
    ]


@INSTALLERS
def test_install_on_older_slicer_passes_the_same_constraints_to_pip_install(
    install, requirements_file, slicer_pip_install
):
    install()
    assert slicer_pip_install.calls == [["-r", str(requirements_file), "-c", *_installed_pins()]]


@pytest.mark.parametrize(
    "path", [dependencies.REQUIREMENTS_FILE, dependencies.OPENVINO_REQUIREMENTS_FILE], ids=lambda p: p.name
)
def test_requirements_files_read_the_same_with_slicers_parser(path):
    # Slicer's load_requirements (Base/Python/slicer/packaging.py, v5.12.3) skips blank lines and lines
    # starting with "#" or "-" and parses every other line whole with packaging's Requirement, so an
    # inline comment, which read_requirements drops, would fail there.
    from packaging.requirements import Requirement

    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    parsed = [str(Requirement(line)) for line in lines if line and not line.startswith(("#", "-"))]
    assert parsed == dependencies.read_requirements(path)


def test_requirements_never_ask_for_what_the_constraints_pin():
    names = _distribution_names(dependencies.read_requirements())
    assert not names & {"numpy", "torch", "simpleitk"}


@pytest.mark.parametrize("returned", [object(), None], ids=["installed", "failed"])
def test_torch_is_asked_from_the_pytorch_extension_with_the_cores_range(returned, monkeypatch):
    import types

    calls: list[dict] = []

    class PyTorchUtilsLogic:  # SlicerPyTorch, PyTorchUtils/PyTorchUtils.py
        def installTorch(  # noqa: N802 - the extension's name
            self,
            askConfirmation=False,  # noqa: N803
            forceComputationBackend=None,  # noqa: N803
            torchVersionRequirement=None,  # noqa: N803
            torchvisionVersionRequirement=None,  # noqa: N803
        ):
            calls.append({"ask": askConfirmation, "torch": torchVersionRequirement})
            return returned

    extension = types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", extension)
    if returned is None:
        with pytest.raises(RuntimeError, match="PyTorch could not be installed"):
            dependencies._install_torch()
    else:
        dependencies._install_torch()
    assert calls == [{"ask": False, "torch": dependencies.TORCH_REQUIREMENT}]


def test_missing_pytorch_extension_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import fails, as without the extension
    with pytest.raises(RuntimeError, match="needs the PyTorch extension"):
        dependencies._install_torch()


def test_torch_range_asked_for_is_the_cores():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    torch_lines = [
        r
        for r in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
        if dependencies.distribution_name(r) == "torch"
    ]
    assert torch_lines == ["torch" + dependencies.TORCH_REQUIREMENT]


# ---- the panel's decision: ask, install, or offer a restart ----------------------------------------


class _Packages:
    """What is importable: ``after_install`` is what an install makes visible without a restart."""

    def __init__(self, missing: list[str], after_install: list[str]):
        self.missing, self.after_install, self.installs = missing, after_install, 0

    def install(self):
        self.installs += 1
        self.missing = self.after_install


def _ensure(gate, answers: dict[str, bool], asked: list[str]) -> bool:
    def ask(kind):
        return lambda missing: asked.append(f"{kind}: {', '.join(missing)}") or answers[kind]

    return gate.ensure(ask("install"), ask("restart"), lambda: asked.append("restarted"))


def test_declining_once_asks_again_next_time_instead_of_locking_installing_out():
    packages = _Packages(["torch", "monai"], after_install=[])
    gate = dependencies.DependencyGate(lambda: packages.missing, packages.install)
    asked: list[str] = []
    assert _ensure(gate, {"install": False, "restart": False}, asked) is False
    assert packages.installs == 0
    assert _ensure(gate, {"install": True, "restart": False}, asked) is True
    assert asked == ["install: torch, monai", "install: torch, monai"]
    assert packages.installs == 1
    assert _ensure(gate, {"install": True, "restart": False}, asked) is True  # nothing missing: no question
    assert len(asked) == 2


def test_packages_still_missing_after_installing_offer_a_restart_not_a_second_install():
    packages = _Packages(["skimage"], after_install=["skimage"])  # needs a restart to be seen
    gate = dependencies.DependencyGate(lambda: packages.missing, packages.install)
    asked: list[str] = []
    assert _ensure(gate, {"install": True, "restart": True}, asked) is False
    assert asked == ["install: skimage", "restart: skimage", "restarted"]
    assert _ensure(gate, {"install": True, "restart": False}, asked) is False
    assert asked[3:] == ["restart: skimage"] and packages.installs == 1


def test_nothing_missing_asks_nothing():
    gate = dependencies.DependencyGate(lambda: [], lambda: pytest.fail("nothing to install"))
    asked: list[str] = []
    assert _ensure(gate, {}, asked) is True and asked == []


# ---- the optional OpenVINO backend: offered where the CPU runs, installed with the same pins ----------


def test_openvino_requirements_equal_the_cores_openvino_extra():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    # `pip install "unetrpp[openvino]"` and the panel's button install the same OpenVINO
    assert dependencies.read_requirements(dependencies.OPENVINO_REQUIREMENTS_FILE) == extras["openvino"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            subprocess.CalledProcessError(1, "pip install"),  # as packaging.py (v5.12.3) raises it
            "pip exited with status 1; its output is in the Python console",
        ),
        (ValueError("constraints file not found\ndetails"), "constraints file not found"),
    ],
    ids=["pip-failed", "other-error"],
)
def test_a_failed_openvino_install_is_one_clear_line_for_the_panel(error, reason, slicer_pip_install):
    slicer_pip_install.error = error
    with pytest.raises(RuntimeError) as raised:
        dependencies.install_openvino()
    assert str(raised.value) == f"OpenVINO could not be installed: {reason}"
    assert raised.value.__cause__ is error  # the traceback keeps pip's own error
    assert len(slicer_pip_install.calls) == 1


def test_an_install_that_leaves_openvino_unimportable_is_a_failure(slicer_packaging, monkeypatch):
    # pip_ensure returns without installing in Slicer's testing mode (packaging.py v5.12.3)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino fails, as if never installed
    with pytest.raises(RuntimeError, match="^OpenVINO could not be installed: this Python still cannot"):
        dependencies.install_openvino()
    assert len(slicer_packaging) == 1


def test_openvino_installed_follows_what_this_python_can_import(monkeypatch):
    assert dependencies.openvino_installed() is True  # a test dependency
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    assert dependencies.openvino_installed() is False


@pytest.mark.parametrize(
    ("cuda_available", "force_cpu", "openvino_installed", "backend", "button"),
    [
        (False, False, False, "PyTorch", True),  # no GPU: the CPU runs, OpenVINO missing
        (False, True, False, "PyTorch", True),
        (True, True, False, "PyTorch", True),  # CPU forced on a GPU machine
        (True, False, False, "PyTorch", False),  # the GPU runs torch: nothing to offer
        (False, False, True, "OpenVINO", False),
        (False, True, True, "OpenVINO", False),
        (True, True, True, "OpenVINO", False),
        (True, False, True, "OpenVINO", False),
    ],
)
def test_openvino_is_offered_only_where_the_cpu_runs_and_it_is_missing(
    cuda_available, force_cpu, openvino_installed, backend, button
):
    offer = dependencies.cpu_backend_offer(cuda_available, force_cpu, openvino_installed)
    assert offer == dependencies.CpuBackendOffer(backend=backend, offer_install=button)


@pytest.mark.parametrize(
    ("cuda_available", "force_cpu", "on_cpu"),
    [(False, False, True), (False, True, True), (True, True, True), (True, False, False)],
)
def test_a_run_goes_to_the_cpu_when_chosen_or_without_cuda(cuda_available, force_cpu, on_cpu):
    """The panel files a run's time under this device, and offers OpenVINO where it says the CPU."""
    assert dependencies.cpu_runs_the_network(cuda_available, force_cpu) is on_cpu
