"""Builders for official-format UNETR++ files (nnU-Net v1 ``.model`` + ``.model.pkl``), used by the tests.

They write what the reference trainers write, at tiny network sizes: a ``torch.save`` dict with
``epoch``, ``state_dict`` (keys with DataParallel's ``module.``), a real SGD optimizer state,
``plot_stuff``/``best_stuff`` holding numpy scalars and 0-d arrays, ``amp_grad_scaler``; and a plain
pickle ``{"init", "name", "class", "plans"}`` whose plans hold numpy arrays, scalars, dtypes and
OrderedDicts.
"""

from __future__ import annotations

import copy
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from unetrpp.models.cards import ChannelNormalization, ModelCard, NormalizationScheme, Plans
from unetrpp.network import VARIANTS, build_network

TINY = {
    # variant: build_network overrides giving a small network of the same structure
    "synapse": {"patch_size": (16, 32, 32), "feature_size": 4, "out_channels": 3},
    "acdc": {"patch_size": (8, 32, 32), "feature_size": 4, "out_channels": 4},
    "tumor": {"patch_size": (32, 32, 32), "feature_size": 4, "out_channels": 4},
}


def tiny_network(variant: str = "synapse", **overrides: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(variant, **{**TINY[variant], **overrides})


def _trained_optimizer_state(network: torch.nn.Module) -> dict[str, Any]:
    """A real SGD state with momentum buffers, as the reference trainers save it (``network`` stays
    unchanged: the step runs on a copy)."""
    network = copy.deepcopy(network)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    for parameter in network.parameters():
        parameter.grad = torch.full_like(parameter, 1e-3)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer.state_dict()


def official_checkpoint_dict(network: torch.nn.Module, *, data_parallel: bool = True) -> dict[str, Any]:
    prefix = "module." if data_parallel else ""
    state_dict = OrderedDict((prefix + key, value.clone()) for key, value in network.state_dict().items())
    return {
        "epoch": 1000,
        "state_dict": state_dict,
        "optimizer_state_dict": _trained_optimizer_state(network),
        "lr_scheduler_state_dict": None,
        "plot_stuff": (
            [np.float64(0.9), np.float64(0.5)],  # training losses: np.mean of float32 arrays
            [np.float32(0.7), np.float32(0.6)],
            [np.array(0.65, dtype=np.float32)],  # a 0-d array as .numpy() returns it
            [np.float64(0.81)],
        ),
        "best_stuff": (np.int64(998), np.float64(0.42), np.float64(0.83)),
        "amp_grad_scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "_growth_tracker": 7,
        },
    }


def write_official_checkpoint(
    path: Path, network: torch.nn.Module, *, numpy1_names: bool = False, legacy_format: bool = False
) -> Path:
    """``torch.save`` an official-like checkpoint; ``numpy1_names`` rewrites the pickle as numpy 1.x
    writes it (``numpy.core.multiarray`` instead of numpy 2's ``numpy._core.multiarray``);
    ``legacy_format`` writes the pre-1.6 non-zip torch format."""
    torch.save(official_checkpoint_dict(network), path, _use_new_zipfile_serialization=not legacy_format)
    if numpy1_names:
        _rename_numpy_module(path)
    return path


def _rename_numpy_module(path: Path) -> None:
    source = zipfile.ZipFile(path)
    entries = [(info, source.read(info)) for info in source.infolist()]
    source.close()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as target:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                # Protocol 2 names globals as text lines, so the shorter name needs no length fix.
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)


def nnunet_plans(
    *,
    modalities: dict[int, str] | None = None,
    num_foreground: int = 2,
    fullres_spacing: tuple[float, float, float] = (3.0, 0.7578125, 0.7578125),
    fullres_patch: tuple[int, int, int] = (16, 32, 32),
    transpose_forward: tuple[int, int, int] = (0, 1, 2),
    transpose_backward: tuple[int, int, int] = (0, 1, 2),
) -> OrderedDict:
    """nnU-Net v1 plans with a 3d_lowres stage 0 and a 3d_fullres stage 1, numpy-typed like real ones."""
    modalities = modalities or {0: "CT"}
    channels = range(len(modalities))

    def stage(spacing: tuple[float, ...], patch: tuple[int, ...]) -> dict[str, Any]:
        return {
            "batch_size": 2,
            "num_pool_per_axis": [3, 5, 5],
            "patch_size": np.array(patch, dtype=np.int64),
            "median_patient_size_in_voxels": np.array([148, 512, 512]),
            "current_spacing": np.array(spacing, dtype=np.float64),
            "original_spacing": np.array(fullres_spacing, dtype=np.float64),
            "do_dummy_2D_data_aug": np.bool_(False),
            "pool_op_kernel_sizes": [[2, 2, 2]] * 3,
            "conv_kernel_sizes": [[3, 3, 3]] * 4,
        }

    intensity = OrderedDict(
        (
            c,
            OrderedDict(
                median=np.float64(70.0 + c),
                mean=np.float64(82.95177 + c),
                sd=np.float64(136.94818 + c),
                mn=np.float64(-1024.0),
                mx=np.float64(3071.0),
                percentile_99_5=np.float64(326.0 + c),
                percentile_00_5=np.float64(-958.0 + c),
            ),
        )
        for c in channels
    )
    is_ct = any(m.upper() == "CT" for m in modalities.values())
    return OrderedDict(
        num_stages=2,
        num_modalities=len(modalities),
        modalities=dict(modalities),
        normalization_schemes=OrderedDict((c, "CT" if modalities[c] == "CT" else "nonCT") for c in channels),
        dataset_properties={
            "all_spacings": [np.array(fullres_spacing)] * 2,
            "modalities": dict(modalities),
            "intensityproperties": intensity if is_ct else None,
            "all_classes": list(range(1, num_foreground + 1)),
            "data_dtype": np.dtype("float32"),  # a dtype object, pickled as numpy.dtype
        },
        num_classes=num_foreground,
        all_classes=list(range(1, num_foreground + 1)),
        use_mask_for_norm=OrderedDict((c, np.bool_(modalities[c] != "CT")) for c in channels),
        transpose_forward=list(transpose_forward),
        transpose_backward=[np.int64(a) for a in transpose_backward],
        plans_per_stage={
            0: stage(tuple(2 * s for s in fullres_spacing), fullres_patch),
            1: stage(fullres_spacing, fullres_patch),
        },
        base_num_features=32,
        data_identifier="nnUNetData_plans_v2.1",
    )


def write_official_plans(
    path: Path, plans: dict[str, Any], *, stage: int | None = 1, protocol: int = 4
) -> Path:
    """Write the ``.model.pkl`` info dict the reference trainers save next to a checkpoint."""
    info = OrderedDict(
        init=("/data/plans.pkl", 0, "/out/fold_0", "/data", True, stage, True, True, True),
        name="unetr_pp_trainer_synapse",
        # str(self.__class__): a plain string, not a class reference
        **{"class": "<class 'unetr_pp.training.network_training.unetr_pp_trainer_synapse.Trainer'>"},
        plans=plans,
    )
    path.write_bytes(pickle.dumps(info, protocol=protocol))
    return path


def sibling_plans_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".pkl")


def tiny_card(network: torch.nn.Module, name: str = "tiny") -> ModelCard:
    """A model card with plans that agree with ``network`` (classes, inputs, patch)."""
    config = network.config
    plans = Plans(
        channels=tuple(
            ChannelNormalization(NormalizationScheme.CT, False, 82.95, 136.95, -958.0, 326.0)
            for _ in range(config.in_channels)
        ),
        target_spacing_zyx=(3.0, 0.76, 0.76),
        patch_size_zyx=config.patch_size,
        num_classes=config.out_channels,
    )
    native = VARIANTS[config.variant].to_dict()
    overrides = {key: value for key, value in config.to_dict().items() if value != native[key]}
    return ModelCard(
        name=name,
        title="Tiny test model",
        task="tests",
        modality="CT",
        input_channels=tuple(f"channel {c}" for c in range(config.in_channels)),
        label_set="synapse",
        labels=tuple((v, f"structure {v}") for v in range(1, config.out_channels)),
        variant=config.variant,
        patch_size_zyx=config.patch_size,
        network_overrides=overrides,
        plans=plans,
    )
