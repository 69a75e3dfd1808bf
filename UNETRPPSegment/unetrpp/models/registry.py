"""The bundled model cards: the single source of truth for which models exist and what they are.

The cards are data (``unetrpp/data/models.json``, each entry a :meth:`ModelCard.to_dict`), read once
and validated by :meth:`ModelCard.from_dict`. This module imports no torch, so ``unetrpp models`` and
the Slicer module's model list answer instantly.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources

from unetrpp.errors import ModelNotFoundError
from unetrpp.models.cards import ModelCard

__all__ = ["list_cards", "find_card", "card_names", "BUNDLED_SCHEME"]

# A weights URL with this scheme names a file shipped inside the package (the demo model).
BUNDLED_SCHEME = "package://"

_CARDS_RESOURCE = ("data", "models.json")
_FORMAT_VERSION = 1


@functools.lru_cache(maxsize=1)
def list_cards() -> tuple[ModelCard, ...]:
    """All bundled model cards, in the order they are listed in ``models.json``."""
    text = resources.files("unetrpp").joinpath(*_CARDS_RESOURCE).read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"models.json has format_version {data.get('format_version')}, expected {_FORMAT_VERSION}"
        )
    cards = tuple(ModelCard.from_dict(entry) for entry in data["cards"])
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
