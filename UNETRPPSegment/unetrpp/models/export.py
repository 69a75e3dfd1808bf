"""Convert an official ``model_final_checkpoint.model`` (+ plans) into one self-contained ``.unetrpp`` file.

The result carries the weights, the model card and the plans, so it runs anywhere without the
reference code, its pickles, or this package's registry (see ``models/checkpoint.py``).
"""

from __future__ import annotations

from pathlib import Path

from unetrpp.errors import CheckpointError
from unetrpp.events import EventCallback
from unetrpp.models.cards import ModelCard
from unetrpp.models.registry import find_card
from unetrpp.models.validate import check_weights_file, sniff_format

__all__ = ["export_official"]


def export_official(
    checkpoint: str | Path,
    output: str | Path,
    model: str | ModelCard,
    *,
    overwrite: bool = False,
    on_event: EventCallback | None = None,
) -> Path:
    """Write ``output`` (a ``.unetrpp`` file) from an official checkpoint of ``model``.

    Args:
        checkpoint: the official ``.model`` file; its plans come from ``<checkpoint>.pkl`` when present,
            else from the model card (only ``synapse`` has them built in).
        output: the new file; an existing file is kept unless ``overwrite``.
        model: registry name or card the weights belong to (its labels, orientation, citation...).

    Raises:
        CheckpointMismatchError: the checkpoint holds another variant than the card's network.
        CheckpointError: unreadable checkpoint, or no plans anywhere.
        OutputExistsError: ``output`` exists and ``overwrite`` is False.
    """
    from unetrpp.models.checkpoint import save_model
    from unetrpp.models.loader import load_model_path

    card = model if isinstance(model, ModelCard) else find_card(model)
    checkpoint = Path(checkpoint)
    if checkpoint.is_file() and sniff_format(checkpoint) == "unetrpp":
        raise CheckpointError(f"{checkpoint} already is a .unetrpp model file; nothing to convert")
    # Which network the weights hold is checked first: a clearer message than missing plans.
    check_weights_file(checkpoint, "official", deep=True, card=card)
    loaded = load_model_path(checkpoint, card=card, on_event=on_event)
    return save_model(output, loaded.network, loaded.card, overwrite=overwrite)
