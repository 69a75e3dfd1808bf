"""Is this file really the weights we expect? Checked before anything enters the cache.

Two depths: ``deep=False`` looks at the first bytes only (after a download: a torch archive or a
safetensors file, not an HTML page), ``deep=True`` loads the file with the checkpoint readers
(``models/official.py``, ``models/checkpoint.py``) and checks that it holds the card's network (for an
official checkpoint, with the card's sizes: every key and shape). Only
the deep check imports torch, and only when called.
"""

from __future__ import annotations

import json
import logging
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unetrpp.errors import CheckpointError, CheckpointMismatchError, UnetrppError
from unetrpp.models.archive import check_zip_complete, is_torch_archive
from unetrpp.models.cards import ModelCard
from unetrpp.models.share_links import looks_like_html

__all__ = ["check_weights_file", "sniff_format", "special_file_kind"]

logger = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6 (the official checkpoints)
_PICKLE_PROTOCOL_2 = b"\x80\x02"  # legacy torch.save


def sniff_format(path: str | Path) -> str | None:
    """``"official"`` (a torch archive or legacy torch pickle), ``"unetrpp"`` (safetensors), or None.

    A plain zip that merely holds a checkpoint is None: unpack it first (``models/archive.py``).
    """
    path = Path(path)
    with open(path, "rb") as stream:
        head = stream.read(64)
    if head.startswith(_ZIP_MAGIC):
        return "official" if is_torch_archive(path) else None
    if head.startswith(_PICKLE_PROTOCOL_2):
        return "official"
    if len(head) > 8:
        (header_bytes,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 8 + header_bytes <= path.stat().st_size:
            return "unetrpp"
    return None


def check_weights_file(
    path: str | Path, weights_format: str, *, deep: bool = False, card: ModelCard | None = None
) -> None:
    """Raise unless ``path`` is a weights file of ``weights_format`` (and, when ``deep``, of ``card``).

    Raises:
        CheckpointError: an HTML page, an unknown format, or a file the readers reject.
        CheckpointMismatchError: a valid checkpoint of another network than the card's.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    with open(path, "rb") as stream:
        head = stream.read(4096)
    if looks_like_html(head):
        raise CheckpointError(
            f"{path} is a web page, not a checkpoint (Google Drive sends one when its quota is exceeded or "
            "it asks for a confirmation); download the file again in a browser"
        )
    if head.startswith(_ZIP_MAGIC):
        check_zip_complete(path)
    found = sniff_format(path)
    if found != weights_format:
        expected = (
            "a PyTorch checkpoint (.model)" if weights_format == "official" else "a .unetrpp model file"
        )
        raise CheckpointError(f"{path} is not {expected}")
    if deep:
        _load_and_compare(path, weights_format, card)


def _load_and_compare(path: Path, weights_format: str, card: ModelCard | None) -> None:
    try:
        if weights_format == "official":
            from unetrpp.models.official import detect_variant, load_official_checkpoint
        else:
            from unetrpp.models.checkpoint import load_model_file
    except ImportError:
        logger.warning("checkpoint readers unavailable; %s was only checked by its first bytes", path)
        return
    try:
        if weights_format == "official":
            state_dict, _plans = load_official_checkpoint(path)
            variant = detect_variant(state_dict)
            labels = None
        else:
            loaded = load_model_file(path)
            variant = loaded.card.variant
            labels = loaded.card.labels
    except UnetrppError:
        raise
    except Exception as error:  # torch / safetensors errors on damaged files
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {error})"
        ) from error
    if card is None:
        return
    if variant is None:
        raise CheckpointMismatchError(
            f"{path} holds no UNETR++ network this package knows (synapse, acdc, lung or tumor layout)"
        )
    if variant != card.variant:
        raise CheckpointMismatchError(
            f"{path} holds the {variant!r} network, not the {card.variant!r} network of model {card.name!r}"
        )
    if weights_format == "official":
        _check_fits_card_network(path, state_dict, card)
    if labels is not None and tuple(labels) != card.labels:
        raise CheckpointMismatchError(
            f"{path} segments {_describe(labels)}, but model {card.name!r} segments {_describe(card.labels)}"
        )


def _check_fits_card_network(path: Path, state_dict: Mapping[str, Any], card: ModelCard) -> None:
    """Official weights carry no architecture: they must fit the card's network exactly (sizes too),
    or the first segmentation would fail instead of the import. Built on the meta device: no memory."""
    import torch

    from unetrpp.models.official import check_state_dict
    from unetrpp.network import build_network

    with torch.device("meta"):
        network = build_network(card.variant, **card.network_overrides)
    try:
        check_state_dict(network, state_dict)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f"{path}: {error} (model {card.name!r})") from error


def _describe(labels: tuple[tuple[int, str], ...]) -> str:
    return json.dumps([name for _, name in labels])[:120]


def special_file_kind(path: Path) -> str | None:
    """What an existing path that is neither a regular file nor a folder is; None when nothing is there."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kinds = (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")
