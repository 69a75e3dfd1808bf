"""Short real training runs on tiny phantoms with a tiny UNETR++: loss falls, the model loads, runs
are reproducible and resumable."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from unetrpp.cli import main
from unetrpp.errors import Cancelled, OutputExistsError
from unetrpp.models.checkpoint import load_model_file
from unetrpp.train.config import TrainConfig
from unetrpp.train.dataset import write_phantom_dataset
from unetrpp.train.export import annotate_model, card_for, save_trained_model
from unetrpp.train.loop import CHECKPOINT_NAME, TrainingProgress, result_from_checkpoint, train
from unetrpp.train.phantoms import PhantomOptions

TINY = PhantomOptions(spacing_xy_mm=(3.0, 3.5), spacing_z_mm=(4.0, 5.0), scale=0.5)


def _config(**changes) -> TrainConfig:
    base = dict(
        model_name="tiny",
        patch_size_zyx=(16, 32, 32),
        target_spacing_zyx=(6.0, 6.0, 6.0),
        network_overrides={"feature_size": 4, "depths": (1, 1, 1, 1)},
        iterations=4,
        batch_size=2,
        optimizer="adamw",
        learning_rate=3e-3,
        validate_every=2,
        validation_fraction=0.25,
        device="cpu",
        seed=0,
        num_threads=1,  # on a busy 2-core machine one thread is several times faster than two
    )
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("tiny"), 4, seed=50, options=TINY)


def _validation_dice_recomputed(dataset, config: TrainConfig, result) -> list[float]:
    from monai.inferers import sliding_window_inference
    from unetrpp.train.sampling import load_cases

    cases = [case for case in dataset.cases if case.name in result.validation_cases]
    assert [case.name for case in cases] == list(result.validation_cases) and cases
    scores: dict[int, list[float]] = {value: [] for value in range(1, result.plans.num_classes)}
    network = result.network.eval()
    for case in load_cases(cases, result.plans, config, None):
        # MONAI's loaded arrays are (C, X, Y, Z); the network takes (B, C, Z, Y, X).
        image = torch.as_tensor(np.asarray(case["image"])).permute(0, 3, 2, 1)[None].float()
        truth = np.asarray(case["label"]).transpose(0, 3, 2, 1)[0]
        with torch.inference_mode():
            logits = sliding_window_inference(
                image, result.plans.patch_size_zyx, 2, network, overlap=0.25, mode="gaussian"
            )
        prediction = logits.argmax(1)[0].numpy()
        for value in scores:
            p, t = prediction == value, truth == value
            both = int(p.sum()) + int(t.sum())
            scores[value].append(2 * int((p & t).sum()) / both if both else float("nan"))
    return [float(np.nanmean(s)) if not np.isnan(s).all() else float("nan") for s in scores.values()]


def test_training_lowers_the_loss_and_writes_a_loadable_model(dataset, tmp_path):
    events = []
    config = _config(iterations=12, validate_every=6)
    result = train(dataset, config, checkpoint_dir=tmp_path / "ckpt", on_event=events.append)
    assert len(result.losses) == 2 and result.losses[1] < result.losses[0]
    progress = [e for e in events if isinstance(e, TrainingProgress)]
    assert [e.iteration for e in progress] == list(range(1, 13))
    assert progress[-1].validation_dice is not None
    assert [v for v, _ in result.validation_dice] == list(range(1, 12))
    # The reported Dice is the trained network's, recomputed here: the same sliding window over the
    # preprocessed held-out case, Dice = 2|P & T| / (|P| + |T|) per label (NaN where both are empty).
    expected = _validation_dice_recomputed(dataset, config, result)
    assert [d for _, d in result.validation_dice] == pytest.approx(expected, abs=1e-6, nan_ok=True)
    assert max(d for d in expected if not np.isnan(d)) > 0  # the network does find some structures
    assert progress[-1].validation_dice == pytest.approx(np.nanmean(expected), abs=1e-6)

    card = card_for(dataset, config, result, notes="test run")
    path = save_trained_model(tmp_path / "tiny.unetrpp", result, card)
    loaded = load_model_file(path)
    assert loaded.card.labels == dataset.labels and loaded.card.label_set == "btcv"
    assert loaded.card.plans.target_spacing_zyx == (6.0, 6.0, 6.0)
    assert "validation Dice" in loaded.card.notes and "seed 0" in loaded.card.notes
    with torch.inference_mode():
        logits = loaded.network(torch.zeros(1, 1, 16, 32, 32))
    assert tuple(logits.shape) == (1, 12, 16, 32, 32)
    # The exported network equals the trained one.
    for name, tensor in result.network.state_dict().items():
        assert torch.equal(tensor, loaded.network.state_dict()[name]), name
    # Held-out scores can be added to the card later without touching the weights.
    annotate_model(path, notes="held-out Dice 0.5", paper_accuracy="n/a")
    annotated = load_model_file(path)
    assert annotated.card.notes == "held-out Dice 0.5" and annotated.card.paper_accuracy == "n/a"
    for name, tensor in loaded.network.state_dict().items():
        assert torch.equal(tensor, annotated.network.state_dict()[name]), name
    # float16 storage: half the file, and float32 weights again after loading.
    small = save_trained_model(tmp_path / "half.unetrpp", result, card, use_float16=True)
    assert small.stat().st_size < 0.6 * path.stat().st_size
    weights = load_model_file(small).network.state_dict()
    assert all(t.dtype != torch.float16 for t in weights.values())
    name = "out1.conv.conv.weight" if "out1.conv.conv.weight" in weights else next(iter(weights))
    assert torch.allclose(weights[name], result.network.state_dict()[name], atol=1e-2)


def test_same_seed_reproduces_the_run_and_resume_continues_it_exactly(dataset, tmp_path):
    full = train(dataset, _config(), checkpoint_dir=tmp_path / "full")

    def stop_after_three(event):
        if isinstance(event, TrainingProgress) and event.iteration == 3:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        train(dataset, _config(), checkpoint_dir=tmp_path / "part", on_event=stop_after_three)
    with pytest.raises(OutputExistsError, match="resume"):
        train(dataset, _config(), checkpoint_dir=tmp_path / "part")
    interrupted = result_from_checkpoint(tmp_path / "part", dataset)  # state after 2 iterations
    assert interrupted.losses and len(interrupted.losses) == 1
    resumed = train(dataset, _config(), checkpoint_dir=tmp_path / "part", resume=True)

    assert resumed.losses == pytest.approx(full.losses)
    for name, tensor in full.network.state_dict().items():
        assert torch.allclose(tensor, resumed.network.state_dict()[name], atol=1e-6), name
    assert not all(
        torch.equal(t, interrupted.network.state_dict()[n]) for n, t in full.network.state_dict().items()
    )


def test_cli_generates_phantoms_and_trains(tmp_path, capsys):
    code = main(
        [
            "train",
            str(tmp_path / "data"),
            str(tmp_path / "cli.unetrpp"),
            "--phantoms",
            "3",
            "--phantom-seed",
            "70",
        ]
        + ["--patch", "16,32,32", "--spacing", "6,6,6", "--feature-size", "4", "--depths", "1,1,1,1"]
        + ["--iterations", "2", "--validate-every", "2", "--validation-fraction", "0.34", "--device", "cpu"]
        + ["--optimizer", "adamw", "--progress", "none", "--threads", "1"]
    )
    assert code == 0
    output = tmp_path / "cli.unetrpp"
    wrote = re.fullmatch(
        rf"wrote {re.escape(str(output))} \(validation mean Dice ([0-9.]+), [0-9.]+ min\)\n",
        capsys.readouterr().out,
    )
    assert wrote and 0.0 <= float(wrote.group(1)) <= 1.0
    assert len(list((tmp_path / "data" / "imagesTr").iterdir())) == 3  # the generated phantoms
    loaded = load_model_file(output)
    assert loaded.card.name == "cli" and loaded.card.modality == "CT"
    # The options reached the model: patch, spacing and width.
    assert loaded.card.plans.patch_size_zyx == (16, 32, 32)
    assert loaded.card.plans.target_spacing_zyx == (6.0, 6.0, 6.0)
    assert loaded.network(torch.zeros(1, 1, 16, 32, 32)).shape == (1, 12, 16, 32, 32)
    stem = loaded.network.state_dict()["encoder1.conv1.conv.weight"]
    assert stem.shape[0] == 4  # --feature-size (default 16)
    assert np.isfinite(loaded.network(torch.zeros(1, 1, 16, 32, 32)).detach().numpy()).all()
    assert main(["train", str(tmp_path / "data"), str(output)]) == 2  # exists
    capsys.readouterr()

    # --resume through the CLI: two more iterations continue the checkpoint of the first two.
    checkpoint = tmp_path / "cli.unetrpp.checkpoints" / CHECKPOINT_NAME
    first = torch.load(checkpoint, weights_only=True)
    assert first["iteration"] == 2 and len(first["losses"]) == 1
    again = [str(tmp_path / "data"), str(output), "--overwrite", "--iterations", "4"]
    again += ["--patch", "16,32,32", "--spacing", "6,6,6", "--feature-size", "4", "--depths", "1,1,1,1"]
    again += ["--validate-every", "2", "--validation-fraction", "0.34", "--device", "cpu"]
    again += ["--optimizer", "adamw", "--threads", "1"]
    assert main(["train", *again, "--progress", "none"]) == 2  # the checkpoint is never restarted silently
    assert "resume" in capsys.readouterr().err
    assert main(["train", *again, "--progress", "bar", "--resume"]) == 0
    assert "resumed at iteration 2" in capsys.readouterr().err
    resumed = torch.load(checkpoint, weights_only=True)
    assert resumed["iteration"] == 4 and len(resumed["losses"]) == 2
    assert resumed["losses"][0] == first["losses"][0]  # continued, not started over
