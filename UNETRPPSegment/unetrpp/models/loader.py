"""``load_model(name_or_path)``: a ready-to-run network with its card and plans, from a name or a file.

Accepted:

* a ``.unetrpp`` file (this project's format, :mod:`unetrpp.models.checkpoint`);
* an official ``model_final_checkpoint.model``; its plans come from the sibling ``.model.pkl`` or, when
  that is absent, from the registry card of the variant the weights belong to;
* a registry name (``synapse``), resolved through the weights store (``unetrpp download NAME`` or
  ``unetrpp models import PATH --name NAME`` install them; downloads happen only when asked).

This module imports torch only when a model is actually loaded.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from unetrpp.errors import CheckpointError, ModelNotFoundError
from unetrpp.events import EventCallback, StageEvent, WarningEvent, emit
from unetrpp.models.cards import LoadedModel, ModelCard
from unetrpp.models.validate import special_file_kind

__all__ = ["LoadedModel", "load_model", "load_model_path"]

logger = logging.getLogger(__name__)

_PATH_SUFFIXES = (".unetrpp", ".model", ".pt", ".pth", ".safetensors")
# Official checkpoint names in an nnU-Net v1 fold folder, in order of preference.
_OFFICIAL_NAMES = ("model_final_checkpoint.model", "model_best.model")


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as file:
        head = file.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _card_for_variant(variant: str) -> ModelCard:
    from unetrpp.models.registry import list_cards

    for card in list_cards():
        if card.variant == variant and not card.network_overrides:
            return card
    raise CheckpointError(f"no bundled model card describes the official '{variant}' variant")


def _load_official(path: Path, card: ModelCard | None, on_event: EventCallback | None) -> LoadedModel:
    from unetrpp.models.official import check_state_dict, detect_variant, load_official_checkpoint
    from unetrpp.network import build_network

    state_dict, plans = load_official_checkpoint(path)
    if card is None:
        variant = detect_variant(state_dict)
        if variant is None:
            raise CheckpointError(f"{path} holds no UNETR++ weights (none of its keys belong to EPA blocks)")
        card = _card_for_variant(variant)
    if plans is None:
        plans = card.plans
    if plans is None:
        raise CheckpointError(
            f"{path} comes without plans and the '{card.name}' card has none built in: put its "
            f"'{path.name}.pkl' (from the same download) next to it"
        )
    network = build_network(card.variant, **card.network_overrides)
    check_state_dict(network, state_dict)
    network.load_state_dict(state_dict, strict=True)
    config = network.config
    if (plans.num_classes, plans.num_input_channels) != (config.out_channels, config.in_channels):
        raise CheckpointError(
            f"{path}: its plans describe {plans.num_input_channels} input(s) and {plans.num_classes} "
            f"classes, "
            f"the weights {config.in_channels} input(s) and {config.out_channels} outputs"
        )
    if tuple(plans.patch_size_zyx) != tuple(network.config.patch_size):
        # The network only runs on its own patch (token-sized positional embeddings); the reference
        # trainers override the planned patch the same way.
        message = (
            f"plans of {path.name} give patch {plans.patch_size_zyx}; tiling with the network's "
            f"{network.config.patch_size} instead"
        )
        logger.warning(message)
        emit(on_event, WarningEvent(message))
        plans = dataclasses.replace(plans, patch_size_zyx=network.config.patch_size)
    network.deep_supervision = False
    network.eval()
    return LoadedModel(network=network, card=dataclasses.replace(card, plans=plans), plans=plans, source=path)


def _model_file(path: Path) -> Path:
    """``path`` itself, or the one model file inside a folder (an nnU-Net ``fold_0`` folder, say)."""
    if path.is_file():
        return path
    if not path.is_dir():
        kind = special_file_kind(path)
        if kind is None:
            raise ModelNotFoundError(f"model file {path} does not exist")
        raise ModelNotFoundError(
            f"model file {path} is {kind}, not a regular file; give a .unetrpp or .model file"
        )
    candidates = (
        sorted(path.glob("*.unetrpp"))
        or [path / name for name in _OFFICIAL_NAMES if (path / name).is_file()][:1]
    )
    if len(candidates) != 1:
        found = ", ".join(c.name for c in candidates) or f"no .unetrpp or {_OFFICIAL_NAMES[0]}"
        raise ModelNotFoundError(f"folder {path} must hold exactly one model file ({found}); name the file")
    return candidates[0]


def load_model_path(
    path: str | Path, *, card: ModelCard | None = None, on_event: EventCallback | None = None
) -> LoadedModel:
    """Load a weights file, recognised by content: ``.unetrpp`` (safetensors) or an official checkpoint.

    Args:
        path: the file, or a folder holding one ``.unetrpp`` file or ``model_final_checkpoint.model``.
        card: the registry card the file was installed for; None reads it from the file
            (``.unetrpp``) or picks it by the variant the official weights belong to.
        on_event: receives a stage event and warnings.
    """
    path = _model_file(Path(path))
    emit(on_event, StageEvent("load_model", f"Loading {path.name}"))
    if _is_safetensors(path):
        from unetrpp.models.checkpoint import load_model_file

        return load_model_file(path)
    return _load_official(path, card, on_event)


def _looks_like_path(name: str) -> bool:
    """A path when it has a separator or a model suffix, or when it exists and names no bundled model:
    ``demo`` is the bundled model even where the working folder holds a ``demo`` folder (``./demo`` is
    the folder)."""
    if "/" in name or "\\" in name or name.lower().endswith(_PATH_SUFFIXES):
        return True
    if not Path(name).exists():
        return False
    from unetrpp.models.registry import find_card

    try:
        find_card(name)  # the registry's own matching of names
    except ModelNotFoundError:
        return True
    return False


def load_model(
    name_or_path: str | Path, *, allow_download: bool = False, on_event: EventCallback | None = None
) -> LoadedModel:
    """Load a model by registry name or from a weights file, ready for inference.

    Args:
        name_or_path: ``synapse`` (a registry name), or a path to a ``.unetrpp`` file or an official
            ``model_final_checkpoint.model`` (plans from its ``.pkl`` sibling or the variant's card).
        allow_download: fetch missing weights of a registry model (otherwise say how to get them).
        on_event: receives loading stages, warnings and download progress.

    Returns:
        :class:`LoadedModel` with the network in eval mode on the CPU.

    Raises:
        ModelNotFoundError: unknown name (with the closest names) or weights not installed.
        CheckpointError: unreadable, unsafe or mismatching weights.
    """
    if isinstance(name_or_path, Path) or _looks_like_path(name_or_path):
        return load_model_path(name_or_path, on_event=on_event)
    from unetrpp.models import store
    from unetrpp.models.registry import find_card

    card = find_card(name_or_path)
    path = store.installed_weights(card.name)
    if path is None:
        if not allow_download:
            raise ModelNotFoundError(
                f"the weights of model {card.name!r} are not installed; run `unetrpp download {card.name}` "
                f"or, with a file you downloaded, `unetrpp models import PATH --name {card.name}`"
            )
        path = store.download(card.name, on_event=on_event)
    return load_model_path(path, card=card, on_event=on_event)
