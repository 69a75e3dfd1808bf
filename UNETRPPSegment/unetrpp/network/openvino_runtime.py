"""UNETR++ through OpenVINO on the CPU: converted once per machine, cached, checked before each use.

On a 2-core Xeon with AMX a synapse tile took 0.21 s with OpenVINO bf16 against 0.33 s with the torch
bf16 inference copy, and 0.41 s with OpenVINO fp32 against 0.48 s for torch fp32 (``benchmarks/RESULTS.md``,
issue 17). Converting the network from torch takes 5-30 s, so the converted model (OpenVINO IR: an
``.xml`` graph and a ``.bin`` of weights) is kept in ``<model home>/openvino-cache/<key>/`` and reused.

The key is everything the IR depends on: the SHA256 of the network's weights (names, shapes, dtypes and
bytes of its state dict, so any other weights get their own entry), the OpenVINO version, the precision
it is compiled for and the patch size (the IR has a static input shape: with a dynamic one, OpenVINO
failed to compile the network in bf16 with int8 weights). An entry is used only when its manifest names
that key and the SHA256 of both files; a damaged, truncated or stale entry is converted again, never
trusted. Entries are written in a temporary folder and renamed into place, so a killed run leaves no
half entry. The conversion runs in a child process (:mod:`unetrpp.network.openvino_convert`), so its
memory is not added to the inference's peak.

The cache lives in the model home rather than beside each weights file: the bundled weights sit in an
install folder that may be read-only, a weights file may sit in a shared or cohort folder where extra
files surprise, and a hash-keyed entry serves the same weights wherever they are.

OpenVINO is an optional extra (``pip install "unetrpp[openvino]"``), imported only here and only when
used. APIs relied on: ``openvino.convert_model(model, example_input=..., input=...)`` (PyTorch models are
traced from the example input; ``input`` fixes the static shape), ``openvino.save_model(...,
compress_to_fp16=...)`` (fp16 weights for bf16 inference, see :func:`ir_weights_storage`),
``Core.compile_model(model, "CPU", config)`` with the properties ``INFERENCE_PRECISION_HINT``
(``bf16``/``f32``), ``INFERENCE_NUM_THREADS``, ``NUM_STREAMS`` and ``PERFORMANCE_HINT`` (OpenVINO
docs, "CPU device" and "Model conversion"), and ``InferRequest.set_output_tensor`` so results land in
a tensor of ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetrpp.errors import UnetrppError

__all__ = [
    "OPENVINO_INSTALL_HINT",
    "CacheKey",
    "OpenVINONetwork",
    "cache_root",
    "compile_network",
    "convert_into",
    "convert_network",
    "converted_model_path",
    "cpu_properties",
    "input_shape",
    "ir_weights_storage",
    "openvino_available",
    "require_openvino",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

OPENVINO_INSTALL_HINT = 'pip install "unetrpp[openvino]"'
_MODEL_FILE, _WEIGHTS_FILE, _MANIFEST_FILE = "model.xml", "model.bin", "manifest.json"
_NETWORK_FILE = "network.pt"  # the torch network handed to the converting child, deleted after
_CACHE_FOLDER = "openvino-cache"
_HASH_BLOCK = 1 << 24


def openvino_available() -> bool:
    """Whether the OpenVINO runtime can be imported (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def require_openvino() -> Any:
    """The ``openvino`` module.

    Raises:
        UnetrppError: it is not installed (one line naming the extra to install).
    """
    try:
        import openvino
    except ImportError as error:
        raise UnetrppError(
            f"the OpenVINO backend needs OpenVINO, which is not installed: {OPENVINO_INSTALL_HINT} "
            "(or use --backend torch)"
        ) from error
    return openvino


def weights_sha256(network: nn.Module) -> str:
    """SHA256 of the network's state dict: each tensor's name, dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What a converted model depends on; equal keys mean the same IR."""

    weights_sha256: str
    openvino_version: str
    precision: str  # "bf16" or "f32", OpenVINO's inference precision hint
    input_shape: tuple[int, ...]  # (1, channels, *patch size)
    weights_storage: str  # "f16" or "f32": how the IR stores the weights (ir_weights_storage)

    def folder_name(self) -> str:
        shape = "x".join(str(size) for size in self.input_shape)
        summary = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.weights_sha256[:16]}-{self.precision}-{shape}-{summary}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape)}


def cache_root() -> Path:
    """``<model home>/openvino-cache`` (``UNETRPP_HOME`` moves it with the weights)."""
    from unetrpp.models.home import model_home

    return model_home() / _CACHE_FOLDER


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _entry_is_valid(folder: Path, key: CacheKey) -> bool:
    """The manifest names ``key`` and both files have the SHA256 it records."""
    try:
        manifest = json.loads((folder / _MANIFEST_FILE).read_text(encoding="utf-8"))
        if manifest.get("key") != key.as_json():
            return False
        files = manifest["files"]
        return all(_file_sha256(folder / name) == files[name] for name in (_MODEL_FILE, _WEIGHTS_FILE))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def input_shape(network: nn.Module) -> tuple[int, ...]:
    """The static input shape the IR is converted with: one tile, (1, channels, *patch size)."""
    config = network.config
    return (1, int(config.in_channels), *(int(size) for size in config.patch_size))


def convert_network(network: nn.Module, shape: tuple[int, ...]) -> Any:
    """``network`` (as built, eval, fp32) traced into an ``openvino.Model`` with the static ``shape``."""
    openvino = require_openvino()
    with torch.no_grad(), warnings_quiet():
        return openvino.convert_model(network, example_input=torch.zeros(shape), input=[shape])


def ir_weights_storage(precision: str) -> str:
    """How the IR stores the weights for inference in ``precision``: fp16 for bf16, fp32 for f32.

    OpenVINO keeps the IR's weights resident besides its own repacked copy, so fp16 storage holds 68 MB
    less for synapse (0.31 instead of 0.37 GB after compiling; 2-core AMD EPYC VM, 2026-12-04, see
    ``benchmarks/RESULTS.md``). In bf16 the error against fp32 stays bf16's (max 6.6e-3 relative on a
    synapse tile, 7.3e-3 from fp32 weights); f32 inference keeps fp32 weights, so as to equal torch's.
    """
    return "f16" if precision == "bf16" else "f32"


def convert_into(network: nn.Module, key: CacheKey, folder: Path) -> None:
    """Convert ``network`` (as built, eval, fp32) to IR files and their manifest in ``folder`` (in this
    process: the converting child's job)."""
    openvino = require_openvino()
    model = convert_network(network, key.input_shape)
    compress = key.weights_storage == "f16"
    openvino.save_model(model, str(folder / _MODEL_FILE), compress_to_fp16=compress)
    files = {name: _file_sha256(folder / name) for name in (_MODEL_FILE, _WEIGHTS_FILE)}
    manifest = {"key": key.as_json(), "files": files}
    (folder / _MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _convert_in_child(network: nn.Module, key: CacheKey, folder: Path) -> None:
    """:func:`convert_into` in a new Python process, handed the network through a file in ``folder``.

    Raises:
        UnetrppError: the conversion failed (its last line of error output is named).
    """
    network_file = folder / _NETWORK_FILE
    torch.save(network, network_file)
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])  # where this unetrpp is imported from
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "unetrpp.network.openvino_convert"]
    command += [str(network_file), json.dumps(key.as_json()), str(folder)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    finally:
        network_file.unlink(missing_ok=True)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"]
        raise UnetrppError(f"OpenVINO could not convert the network: {lines[-1]}; use --backend torch")


@contextlib.contextmanager
def warnings_quiet():
    """Tracing warns about every shape check in the network's forward (they hold for a static shape)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def converted_model_path(network: nn.Module, key: CacheKey, root: Path | None = None) -> Path:
    """The cached IR ``model.xml`` for ``key``, converting ``network`` first when the entry is missing,
    damaged or stale.

    Raises:
        UnetrppError: the cache folder cannot be written.
    """
    root = cache_root() if root is None else root
    folder = root / key.folder_name()
    if _entry_is_valid(folder, key):
        logger.info("OpenVINO: cached model %s", folder)
        return folder / _MODEL_FILE
    logger.info("OpenVINO: converting the network into %s", folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key.folder_name()}.", dir=root))
    except OSError as error:
        raise UnetrppError(
            f"cannot write the OpenVINO cache in {root}: {error.strerror or error}; set UNETRPP_HOME to a "
            "writable folder or use --backend torch"
        ) from error
    try:
        _convert_in_child(network, key, staging)
        if folder.exists():  # damaged or stale: replaced, never reused
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(staging, folder)
        except OSError:  # another process put its entry there first: use it if it is whole
            if not _entry_is_valid(folder, key):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / _MODEL_FILE


class OpenVINONetwork(nn.Module):
    """A compiled OpenVINO model behind the interface the sliding window uses: ``config``, eval/train,
    ``to``, and ``forward`` from a (B, C, Z, Y, X) float tensor to float32 logits (one inference per
    sample: the IR's batch is 1). Each call returns a new tensor (OpenVINO writes into it directly),
    so mirrored passes can be summed."""

    def __init__(self, compiled: Any, config: Any) -> None:
        super().__init__()
        self.config = config
        self.num_classes = int(compiled.output(0).get_partial_shape()[1].get_length())
        self._request = compiled.create_infer_request()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        import openvino

        batch = batch.detach().to(torch.float32).contiguous()
        output = torch.empty((batch.shape[0], self.num_classes, *batch.shape[2:]), dtype=torch.float32)
        for index in range(batch.shape[0]):
            target = openvino.Tensor(output[index : index + 1].numpy(), shared_memory=True)
            self._request.set_output_tensor(0, target)
            self._request.infer({0: batch[index : index + 1].numpy()}, share_inputs=True)
        return output


def cpu_properties(precision: str) -> dict[str, str]:
    """OpenVINO CPU compile properties for one tile at a time in ``precision`` (``"bf16"``/``"f32"``)."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        # torch's thread count (set by the user, OMP_NUM_THREADS or torch itself): OpenVINO's own choice
        # is the physical cores, which is fewer than torch uses on a VM with hyper-threads.
        "INFERENCE_NUM_THREADS": str(torch.get_num_threads()),
    }


def compile_network(network: nn.Module, precision: str, *, root: Path | None = None) -> OpenVINONetwork:
    """``network`` (a UNETR++ with ``config.patch_size`` and ``config.in_channels``) compiled for this
    CPU in ``precision`` (``"bf16"`` or ``"f32"``), from the cache (converted on first use); ``root``: the
    cache folder.

    Raises:
        UnetrppError: OpenVINO is not installed, or the cache cannot be written.
    """
    openvino = require_openvino()
    key = CacheKey(
        weights_sha256(network),
        openvino.get_version(),
        precision,
        input_shape(network),
        ir_weights_storage(precision),
    )
    xml = converted_model_path(network.eval(), key, root)
    compiled = openvino.Core().compile_model(str(xml), "CPU", cpu_properties(precision))
    logger.info("OpenVINO %s: compiled %s in %s", openvino.get_version(), xml.parent.name, precision)
    return OpenVINONetwork(compiled, network.config)
