"""The bundled model cards: the single source of truth for which models exist and what they are.

The cards are data (``unetrpp/data/models.json``, each entry a :meth:`ModelCard.to_dict`), read once
and validated by :meth:`ModelCard.from_dict`. This module imports no torch, so ``unetrpp models`` and
the Slicer module's model list answer instantly.

A model whose weights ship inside the package (the demo) is described by the file itself: the card
embedded in its ``.unetrpp`` file (labels, plans, network size, validation scores) replaces the
technical fields of its entry, read from the safetensors header as plain JSON.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import struct
from importlib import resources
from pathlib import Path
from typing import Any

from unetrpp.errors import ModelNotFoundError
from unetrpp.models.cards import ModelCard

__all__ = ["list_cards", "find_card", "card_names", "bundled_file", "card_with_model_file", "BUNDLED_SCHEME"]

# A weights URL with this scheme names a file shipped inside the package (the demo model).
BUNDLED_SCHEME = "package://"

_CARDS_RESOURCE = ("data", "models.json")
_FORMAT_VERSION = 1
# Fields a bundled model file's own card decides; name, title, task, weights, licence, citation and
# paper accuracy stay as the registry says.
_FROM_MODEL_FILE = (
    "modality",
    "input_channels",
    "label_set",
    "labels",
    "variant",
    "patch_size_zyx",
    "network_overrides",
    "orientation",
    "orientation_note",
    "plans",
)
_MAX_HEADER_BYTES = 100_000_000

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def list_cards() -> tuple[ModelCard, ...]:
    """All bundled model cards, in the order they are listed in ``models.json``."""
    text = resources.files("unetrpp").joinpath(*_CARDS_RESOURCE).read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"models.json has format_version {data.get('format_version')}, expected {_FORMAT_VERSION}"
        )
    cards = tuple(_with_bundled_file(ModelCard.from_dict(entry)) for entry in data["cards"])
    names = [card.name for card in cards]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"models.json lists these model names twice: {', '.join(duplicates)}")
    return cards


def card_names() -> tuple[str, ...]:
    """Names of all bundled models (``synapse``, ``acdc``, ...)."""
    return tuple(card.name for card in list_cards())


def find_card(name: str) -> ModelCard:
    """The card called ``name`` (case-insensitive).

    Raises:
        ModelNotFoundError: no such model; the message suggests the closest names.
    """
    wanted = name.strip().lower()
    for card in list_cards():
        if card.name == wanted:
            return card
    close = difflib.get_close_matches(wanted, card_names(), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ModelNotFoundError(
        f"no model {name!r}; {hint}(`unetrpp models` lists them: {', '.join(card_names())})"
    )


def bundled_file(card: ModelCard) -> Path | None:
    """The package file holding the weights of a bundled model, or None (not bundled, or missing)."""
    if not card.weights or not card.weights[0].url.startswith(BUNDLED_SCHEME):
        return None
    package, _, inner = card.weights[0].url[len(BUNDLED_SCHEME) :].partition("/")
    path = Path(str(resources.files(package).joinpath(inner)))
    return path if path.is_file() else None


def _with_bundled_file(card: ModelCard) -> ModelCard:
    path = bundled_file(card)
    if path is None or card.weights[0].format != "unetrpp":
        return card
    return card_with_model_file(card, path)


def card_with_model_file(card: ModelCard, path: str | Path) -> ModelCard:
    """``card`` with its technical fields (labels, plans, network...) taken from a ``.unetrpp`` file.

    An unreadable file leaves the card as it is (logged): listing models must never fail.
    """
    path = Path(path)
    try:
        embedded = ModelCard.from_dict(json.loads(_safetensors_metadata(path)["card"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("cannot read the model card inside %s (%s); using the registry entry", path, error)
        return card
    changes: dict[str, Any] = {field: getattr(embedded, field) for field in _FROM_MODEL_FILE}
    changes["notes"] = " ".join(part for part in (card.notes, embedded.notes) if part)
    return dataclasses.replace(card, **changes)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file: an 8-byte little-endian length, then JSON."""
    with open(path, "rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        if not 0 < length < _MAX_HEADER_BYTES:
            raise ValueError(f"implausible safetensors header length {length}")
        header = json.loads(stream.read(length))
    return header["__metadata__"]
