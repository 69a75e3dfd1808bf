"""Official UNETR++ checkpoints: ``model_final_checkpoint.model`` (+ ``.model.pkl`` plans), read safely.

An official checkpoint is what the reference's nnU-Net v1 trainers save: a ``torch.save`` dict with
``epoch``, ``state_dict``, ``optimizer_state_dict``, ``plot_stuff`` (training curves as numpy scalars),
``best_stuff`` and sometimes ``amp_grad_scaler``; keys may carry ``module.`` (DataParallel). The sibling
``.model.pkl`` pickles ``{"init", "name", "class", "plans"}``. Both come from the internet, so the
``.model`` is read with ``weights_only=True`` plus an exact numpy allow-list and the ``.pkl`` with a
plain-data unpickler (:mod:`unetrpp.models.safe_pickle`); nothing in either file can run code.

Which variant a state_dict belongs to is read from its key/shape signature (:func:`detect_variant`),
so a wrong file gets a message naming the variant it looks like instead of a wall of key names.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unetrpp.errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from unetrpp.models.archive import check_zip_complete
from unetrpp.models.cards import Plans
from unetrpp.models.nnunet_plans import plans_from_nnunet_dict
from unetrpp.models.safe_pickle import load_plain_pickle, torch_numpy_allowlist

__all__ = [
    "load_official_checkpoint",
    "load_official_plans",
    "plans_from_nnunet_dict",
    "official_key",
    "detect_variant",
    "check_state_dict",
]

logger = logging.getLogger(__name__)

_DATA_PARALLEL_PREFIX = "module."
_POS_EMBED_KEY = "unetr_pp_encoder.stages.0.0.pos_embed"
_HEAD_KEY = "out1.conv.conv.weight"
# How torch's weights-only unpickler words a refusal of a non-allow-listed object (other failures of
# that unpickler, such as an unknown opcode, mean a damaged file).
_REFUSAL_MARKERS = ("GLOBAL", "Can only build", "Can only create new object", "call reduce")


def official_key(key: str) -> str | None:
    """Key of an official state_dict entry in this package's network; None drops the entry.

    The reference network uses the same names, so only DataParallel's ``module.`` prefix goes.
    """
    return key[len(_DATA_PARALLEL_PREFIX) :] if key.startswith(_DATA_PARALLEL_PREFIX) else key


def _sniff(path: Path) -> bool:
    """Reject files that are clearly not a torch checkpoint; returns True for the zip format."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with path.open("rb") as file:
        head = file.read(512)
    if not head:
        raise CheckpointError(f"{path} is empty (an interrupted download?)")
    if head.lstrip()[:1] == b"<":
        raise CheckpointError(
            f"{path} is a web page (HTML), not a checkpoint; the download probably returned a sign-in "
            "or confirmation page instead of the file"
        )
    if head[:2] == b"PK":
        check_zip_complete(path)
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(name.endswith("data.pkl") for name in names):
            inner = next((n for n in names if n.endswith(".model")), None)
            hint = f"; extract '{inner}' from it first" if inner else ""
            raise CheckpointError(f"{path} is a zip archive, not a PyTorch checkpoint{hint}")
        return True
    if head[:1] != b"\x80":  # legacy torch.save files start with a pickle protocol opcode
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unrecognised file content)")
    return False


def _refused_global(message: str) -> str | None:
    match = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"got <class '([^']+)'>", message)
    return match.group(1) if match else None


def _torch_load(path: Path, is_zip: bool) -> Any:
    try:
        with torch.serialization.safe_globals(torch_numpy_allowlist()):
            # mmap: the optimizer state (as large as the weights) is never read into memory.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        message = str(e)
        if any(marker in message for marker in _REFUSAL_MARKERS):
            name = _refused_global(message)
            what = (
                f"asks to run '{name}', which is not plain data"
                if name
                else "holds objects other than tensors"
            )
            raise UnsafeCheckpointError(
                f"refused to load {path}: it {what} (a tampered or foreign file; nothing was executed)"
            ) from e
        lines = message.splitlines() or [type(e).__name__]
        reason = next((line for line in lines if "error:" in line), lines[0])
        raise CheckpointError(f"{path} is truncated or corrupt ({reason.strip()}); download it again") from e
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError) as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({first_line}); download it again") from e


def _extract_state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        raw = checkpoint["state_dict"]
    elif (
        isinstance(checkpoint, Mapping)
        and checkpoint
        and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    ):
        raw = checkpoint  # a bare state_dict saved on its own
    else:
        found = (
            ", ".join(map(str, list(checkpoint)[:6]))
            if isinstance(checkpoint, Mapping)
            else type(checkpoint).__name__
        )
        raise CheckpointError(f"{path} has no 'state_dict' (found: {found}); is it a model checkpoint?")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(raw).__name__}, not a mapping of tensors")
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        new_key = official_key(str(key))
        if new_key is None:
            continue
        if new_key in state_dict:
            raise CheckpointError(f"{path}: state_dict has '{new_key}' both with and without 'module.'")
        state_dict[new_key] = value
    return state_dict


def load_official_plans(path: str | Path) -> Plans:
    """Read the plans of an official ``.model.pkl`` (``{"init", "name", "class", "plans"}``) safely.

    Raises:
        UnsafeCheckpointError: the pickle references anything but plain data.
        CheckpointError: not a plans pickle, or plans lacking what inference needs.
    """
    path = Path(path)
    info = load_plain_pickle(path)
    if not isinstance(info, Mapping) or "plans" not in info:
        raise CheckpointError(f"{path} is not an nnU-Net checkpoint info pickle (no 'plans' entry)")
    init = info.get("init")
    # nnU-Net v1 trainers store their constructor arguments; the sixth is the stage trained on.
    stage = (
        init[5] if isinstance(init, (tuple, list)) and len(init) > 5 and isinstance(init[5], int) else None
    )
    try:
        return plans_from_nnunet_dict(info["plans"], stage=stage)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Plans | None]:
    """Load an official ``model_final_checkpoint.model`` and, if present, its ``.model.pkl`` plans.

    Args:
        path: the ``.model`` file; plans are read from ``<path>.pkl`` next to it when it exists.

    Returns:
        (state_dict with ``module.`` prefixes removed, plans or None when there is no sibling pickle).

    Raises:
        UnsafeCheckpointError: either file asks to unpickle something other than tensors/plain data.
        CheckpointError: not a checkpoint (HTML page, random bytes), truncated, no ``state_dict``,
            unusable plans.
    """
    path = Path(path)
    is_zip = _sniff(path)
    state_dict = _extract_state_dict(_torch_load(path, is_zip), path)
    plans_path = path.with_name(path.name + ".pkl")
    plans = load_official_plans(plans_path) if plans_path.is_file() else None
    logger.info(
        "loaded %d tensors from %s (plans: %s)", len(state_dict), path, plans_path if plans else "none"
    )
    return state_dict, plans


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in value.shape)


def _architecture_family(keys: list[str]) -> tuple[str, ...]:
    """Variants whose module structure matches: the EPA projection style and the extra conv block."""
    if any(k.endswith("epa_block.EF") for k in keys):
        return ("tumor",)  # one learned token-projection matrix
    if any(".conv52." in k for k in keys):
        return ("acdc", "lung")  # separate E/F and a second conv block per EPA block
    if any(k.endswith("epa_block.E.weight") for k in keys):
        return ("synapse",)  # E and F are one layer
    return ()


def detect_variant(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which reference variant a state_dict looks like: ``synapse``, ``acdc``, ``lung``, ``tumor`` or None.

    The architecture family comes from key names (``epa_block.EF`` → tumor, ``conv52`` → acdc/lung,
    shared ``E``/``F`` → synapse). acdc and lung share their modules and differ in the native patch,
    so the first stage's token count (the positional embedding's length) decides, then the class count.
    Only shapes are read, so meta tensors are fine.
    """
    from unetrpp.network.config import VARIANTS  # the native sizes live with the network

    keys = [k for k in (official_key(str(key)) for key in state_dict) if k is not None]
    family = _architecture_family(keys)
    if len(family) <= 1:
        return family[0] if family else None
    shapes = {official_key(str(k)): v for k, v in state_dict.items()}
    if _POS_EMBED_KEY in shapes:
        tokens = _shape(shapes[_POS_EMBED_KEY])[1]
        for name in family:
            if VARIANTS[name].stage_tokens[0] == tokens:
                return name
    if _HEAD_KEY in shapes:
        classes = _shape(shapes[_HEAD_KEY])[0]
        for name in family:
            if VARIANTS[name].out_channels == classes:
                return name
    return family[0]


def _examples(items: list[str], limit: int = 3) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_state_dict(network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Compare keys and shapes with ``network`` before ``load_state_dict(strict=True)``.

    Raises:
        CheckpointMismatchError: one line naming a few missing, unexpected and mis-shaped keys and the
            variant the checkpoint looks like.
    """
    expected = {key: _shape(value) for key, value in network.state_dict().items()}
    found = {key: _shape(value) for key, value in state_dict.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k} {found[k]} vs {expected[k]}" for k in expected if k in found and found[k] != expected[k]
    ]
    if not (missing or unexpected or reshaped):
        return
    config = getattr(network, "config", None)
    target = getattr(config, "variant", type(network).__name__)
    problems = []
    if missing:
        problems.append(f"missing {_examples(missing)}")
    if unexpected:
        problems.append(f"unexpected {_examples(unexpected)}")
    if reshaped:
        problems.append(f"shape (checkpoint vs network) {_examples(reshaped, 2)}")
    looks_like = detect_variant(state_dict)
    if looks_like is None:
        verdict = "it does not look like any UNETR++ variant"
    elif looks_like == target:
        verdict = (
            f"this file looks like the '{looks_like}' variant with other sizes (classes, patch or widths)"
        )
    else:
        verdict = f"this file looks like the '{looks_like}' variant"
    raise CheckpointMismatchError(
        f"checkpoint does not fit the '{target}' network: {'; '.join(problems)}; {verdict}"
    )
