"""This project's model format: ONE ``.unetrpp`` file holding weights, model card, plans and architecture.

The file is a safetensors file (plain tensors plus a JSON header; reading it never unpickles anything).
Its string metadata carries:

* ``format``: ``"unetrpp"``, ``format_version``: ``"1"``;
* ``card``: the :class:`ModelCard` as JSON, including the :class:`Plans` inference needs;
* ``network``: the network's ``NetworkConfig`` as JSON, so the exact architecture is rebuilt;
* ``aliases``: ``{name: stored_name}`` for state_dict entries that are the same tensor as another one
  (the synapse variant registers one projection layer as both ``E`` and ``F``). safetensors refuses
  shared storage, so each tensor is stored once and re-attached to all its names on load; the rebuilt
  network ties them again by construction.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from unetrpp.atomic import atomic_output
from unetrpp.errors import CheckpointError, OutputExistsError
from unetrpp.models.cards import LoadedModel, ModelCard
from unetrpp.models.official import check_state_dict

if TYPE_CHECKING:
    from unetrpp.network import UNETRPP

__all__ = ["FORMAT", "FORMAT_VERSION", "SUFFIX", "save_model", "load_model_file", "read_metadata"]

logger = logging.getLogger(__name__)

FORMAT = "unetrpp"
FORMAT_VERSION = 1
SUFFIX = ".unetrpp"
_MIN_SPACING_MM = 0.1  # finer than any CT or MR training grid


def _check_consistent(network: UNETRPP, card: ModelCard) -> None:
    """A file whose card contradicts its network would segment wrongly later; refuse to write or read it."""
    config = network.config
    plans = card.plans
    if plans is None:
        raise CheckpointError(f"model card {card.name!r} has no plans; a {SUFFIX} file must carry them")
    problems = []
    if min(plans.target_spacing_zyx) < _MIN_SPACING_MM:
        # Resampling a scan to such a grid would ask for petabytes.
        problems.append(f"target spacing {plans.target_spacing_zyx} mm is below {_MIN_SPACING_MM} mm")
    if plans.num_classes != config.out_channels:
        problems.append(f"plans have {plans.num_classes} classes, the network {config.out_channels} outputs")
    if card.num_classes > config.out_channels:
        problems.append(
            f"card labels go up to {card.num_classes - 1}, the network has {config.out_channels} outputs"
        )
    if plans.num_input_channels != config.in_channels:
        problems.append(
            f"plans have {plans.num_input_channels} input channels, the network {config.in_channels}"
        )
    if tuple(plans.patch_size_zyx) != tuple(config.patch_size):
        problems.append(f"plans patch {plans.patch_size_zyx} differs from the network's {config.patch_size}")
    if problems:
        raise CheckpointError(f"model card {card.name!r} does not match its network: {'; '.join(problems)}")


def _unique_tensors(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store each tensor once: (name -> contiguous copy, alias name -> stored name)."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in state_dict.items():
        identity = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride(), tensor.device)
        if tensor.numel() and identity in seen:
            aliases[name] = seen[identity]
            continue
        seen[identity] = name
        # A copy: safetensors also refuses partial overlaps and non-contiguous views.
        stored[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return stored, aliases


def save_model(path: str | Path, network: UNETRPP, card: ModelCard, *, overwrite: bool = False) -> Path:
    """Write ``network`` and ``card`` (with plans) as one ``.unetrpp`` file, atomically.

    Args:
        path: target file (``.unetrpp`` by convention).
        network: a UNETR++ from :func:`unetrpp.network.build_network` (it has ``.config``).
        card: the model card; its ``plans`` must be set and agree with the network.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        CheckpointError: the card has no plans or contradicts the network.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or pass overwrite")
    _check_consistent(network, card)
    tensors, aliases = _unique_tensors(network.state_dict())
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "card": json.dumps(card.to_dict()),
        "network": json.dumps(network.config.to_dict()),
        "aliases": json.dumps(aliases),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{path} exists; choose another name or pass overwrite")
    logger.info("saved %s (%d tensors, %d aliases)", path, len(tensors), len(aliases))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a ``.unetrpp`` file, checked for format and version; reads no tensors.

    Raises:
        CheckpointError: not a safetensors file, not a unetrpp file, or written by a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        with path.open("rb") as stream:
            looks_like_safetensors = stream.read(9)[8:9] == b"{"  # 8-byte header length, then JSON
        if looks_like_safetensors:
            raise CheckpointError(f"{path} is truncated or damaged ({e}); copy or download it again") from e
        raise CheckpointError(
            f"{path} is not a {SUFFIX} model file (not a readable safetensors file: {e})"
        ) from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a unetrpp model (no 'format: {FORMAT}' metadata)"
        )
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError as e:
        raise CheckpointError(
            f"{path} has an unreadable format_version {metadata.get('format_version')!r}"
        ) from e
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer unetrpp (format version {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade unetrpp"
        )
    missing = [key for key in ("card", "network") if key not in metadata]
    if missing:
        raise CheckpointError(f"{path} lacks the {' and '.join(missing)} metadata of a unetrpp model")
    return metadata


def _json_field(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(metadata.get(key, "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the '{key}' metadata is not valid JSON ({e})") from e


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Prefix a checkpoint error with the file it is about."""
    try:
        yield
    except CheckpointError as error:
        raise type(error)(f"{path}: {error}") from error


def load_model_file(path: str | Path) -> LoadedModel:
    """Load a ``.unetrpp`` file into a ready network (eval mode, deep supervision off).

    Raises:
        CheckpointError: see :func:`read_metadata`; also a card without plans or damaged tensors.
        CheckpointMismatchError: the tensors do not fit the described network.
    """
    from unetrpp.network import UNETRPP, NetworkConfig

    path = Path(path)
    metadata = read_metadata(path)
    try:
        card = ModelCard.from_dict(_json_field(metadata, "card", path))
        config = NetworkConfig.from_dict(_json_field(metadata, "network", path))
        # On the meta device first: a crafted description (feature size 4096) costs nothing until the
        # file's own tensors prove that the network is that large.
        with torch.device("meta"):
            described = UNETRPP(config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its card or network description is invalid ({e})") from e
    if card.plans is None:
        raise CheckpointError(f"{path}: its model card has no plans (preprocessing) to run it with")
    with _naming(path):
        _check_consistent(described, card)
    aliases = _json_field(metadata, "aliases", path)
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise CheckpointError(f"{path}: the 'aliases' metadata is not a mapping of tensor names")
    try:
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e}); copy or download it again") from e
    for alias, stored in aliases.items():
        if stored not in state_dict:
            raise CheckpointError(f"{path}: alias {alias!r} points to missing tensor {stored!r}")
        state_dict[alias] = state_dict[stored]
    with _naming(path):
        check_state_dict(described, state_dict)
    network = UNETRPP(config)
    network.load_state_dict(state_dict, strict=True)
    network.deep_supervision = False
    network.eval()
    return LoadedModel(network=network, card=card, plans=card.plans, source=path)
