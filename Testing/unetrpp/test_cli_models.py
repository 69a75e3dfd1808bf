"""``unetrpp models`` and ``unetrpp download``: output, exit codes, and no torch for the listing."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from unetrpp.cli import main
from unetrpp.cli.terminal import TerminalProgress
from unetrpp.events import ProgressEvent, StageEvent
from unetrpp.models import store
from unetrpp.models.checkpoint import save_model
from unetrpp.models.locking import exclusive_lock
from unetrpp.models.registry import find_card
from unetrpp.network import build_network


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _tiny_synapse_network():
    torch.manual_seed(0)
    return build_network("synapse", patch_size=(16, 32, 32), feature_size=4, deep_supervision=False)


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory) -> Path:
    """An official-layout checkpoint of the synapse family, but smaller than the synapse card's network."""
    path = tmp_path_factory.mktemp("official") / "model_final_checkpoint.model"
    torch.save({"state_dict": _tiny_synapse_network().state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A small ``.unetrpp`` file with the synapse card's labels: it carries its own architecture, so it
    installs as ``synapse``."""
    synapse = find_card("synapse")
    card = dataclasses.replace(synapse, plans=dataclasses.replace(synapse.plans, patch_size_zyx=(16, 32, 32)))
    return save_model(tmp_path_factory.mktemp("tiny") / "tiny.unetrpp", _tiny_synapse_network(), card)


def _run_python(code: str, home: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "UNETRPP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )


@pytest.mark.parametrize("argv", [["models"], ["models", "show", "tumor"]], ids=["list", "show"])
def test_listing_and_showing_models_import_no_torch(argv, home):
    code = f"import sys\nfrom unetrpp.cli import main\nmain({argv!r})\nprint('TORCH', 'torch' in sys.modules)"
    result = _run_python(code, home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("TORCH False")


def test_models_table_lists_every_model_and_the_cache(capsys, home):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["NAME", "MODALITY", "INPUTS", "INSTALLED", "SIZE"]
    for name in ("synapse", "acdc", "lung", "tumor", "demo"):
        assert any(row.startswith(name + " ") for row in rows)
    assert f"Weights cache: {home / 'models'}" in out
    assert "FLAIR, T1w, T1gd, T2w" in out


def test_installed_model_shows_size_and_location(capsys, tiny_model, home):
    assert main(["models", "import", str(tiny_model), "--name", "synapse"]) == 0
    installed = home / "models" / "synapse" / "synapse.unetrpp"
    assert f"installed synapse: {installed}" in capsys.readouterr().out

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    synapse_row = next(line for line in out.splitlines() if line.startswith("synapse "))
    assert " yes " in synapse_row and " MB " in synapse_row
    assert f"synapse: {installed}" in out

    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    entry = next(model for model in listing["models"] if model["name"] == "synapse")
    assert entry["installed"] and entry["path"] == str(installed)
    assert entry["size_bytes"] == tiny_model.stat().st_size


def test_show_prints_the_whole_card(capsys):
    assert main(["models", "show", "synapse"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the card is wrapped to the terminal width
    for fragment in (
        "Abdominal organs",
        "10 portal vein and splenic vein",
        "clip [-958, 326], mean 82.95177, sd 136.94818",
        "3 x 0.75781244 x 0.75781244 mm",
        "Orientation: LAS",
        "87.22",
        "IEEE Transactions on Medical Imaging",
        "drive.google.com/file/d/13JuLMeDQRR_a3c3tr2V2oav6I29fJoBa",
        "not installed (`unetrpp download synapse`)",
    ):
        assert fragment in out, fragment
    assert main(["models", "show", "acdc"]) == 0
    assert "read from the plans shipped with the weights" in capsys.readouterr().out


def test_show_as_json_is_the_card(capsys):
    assert main(["models", "show", "lung", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "lung" and card["labels"] == [[1, "lung tumour"]]


def test_unknown_model_is_one_line_with_suggestion(capsys):
    assert main(["models", "show", "synapes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'synapse'" in err


def test_import_verify_remove_round_trip(capsys, tiny_model, home):
    assert main(["models", "import", str(tiny_model), "--name", "synapse"]) == 0
    assert main(["models", "import", str(tiny_model), "--name", "synapse"]) == 2
    assert "already installed" in capsys.readouterr().err
    assert main(["models", "import", str(tiny_model), "--name", "synapse", "--overwrite"]) == 0
    assert main(["models", "verify", "synapse"]) == 0
    out = capsys.readouterr().out
    assert "synapse: intact" in out and store.installed_record("synapse").sha256 in out
    assert "equals the SHA256 recorded when it was imported" in out and "trusted on first use" in out
    assert main(["models", "remove", "synapse"]) == 0
    assert store.installed_weights("synapse") is None
    assert main(["models", "remove", "synapse"]) == 2
    assert "no weights installed for 'synapse'" in capsys.readouterr().err


def test_import_of_wrong_model_is_refused(capsys, official_checkpoint):
    assert main(["models", "import", str(official_checkpoint), "--name", "lung"]) == 2
    assert "holds the 'synapse' network" in capsys.readouterr().err
    assert store.installed_weights("lung") is None


def test_export_of_wrong_model_is_refused_and_writes_nothing(capsys, official_checkpoint, tmp_path):
    output = tmp_path / "out.unetrpp"
    assert main(["models", "export", str(official_checkpoint), str(output), "--name", "tumor"]) == 2
    assert "not the 'tumor' network" in capsys.readouterr().err
    assert not output.exists()


def test_import_of_a_checkpoint_of_other_sizes_is_refused_in_one_line(capsys, official_checkpoint, home):
    assert main(["models", "import", str(official_checkpoint), "--name", "synapse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the 'synapse' network" in err
    assert not (home / "models" / "synapse").exists()


def test_verify_of_the_bundled_demo_compares_the_pinned_checksum(capsys):
    assert main(["models", "verify", "demo"]) == 0
    out = capsys.readouterr().out
    assert find_card("demo").weights[0].sha256 in out and "pinned in the model card" in out


def test_download_of_installed_model_reports_json_result_and_nothing_else(tiny_model, home):
    store.import_weights(tiny_model, "synapse")
    code = (
        "from unetrpp.cli import main\nraise SystemExit(main(['download', 'synapse', '--progress', 'json']))"
    )
    began = time.monotonic()
    result = _run_python(code, home)
    wall = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 1
    elapsed = events[-1].pop("elapsed_seconds")
    # Fields a download has no value for (a segmentation's extra outputs) may be present as null.
    assert {key: value for key, value in events[-1].items() if value is not None} == {
        "event": "result",
        "output": str(home / "models" / "synapse" / "synapse.unetrpp"),
        "structures": [],
    }
    # A measurement, not a placeholder: within the child's own lifetime (nothing to fetch here).
    assert isinstance(elapsed, float) and 0.0 <= elapsed <= wall


def test_download_reports_the_time_it_waited_for_another_process(tiny_model, home):
    # This process holds the model folder's lock (as a concurrent download would); the command says it
    # waits, and its elapsed_seconds must cover the time the lock was held after that.
    store.import_weights(tiny_model, "synapse")
    command = [sys.executable, "-m", "unetrpp", "download", "synapse", "--progress", "json"]
    environment = {**os.environ, "UNETRPP_HOME": str(home)}
    lines: queue.Queue[str] = queue.Queue()
    with exclusive_lock(store.lock_path("synapse")):
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
        )
        reader = threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True)
        reader.start()
        try:
            waiting = json.loads(lines.get(timeout=120))
        except queue.Empty:
            child.kill()
            raise AssertionError("the command never said it was waiting for the lock") from None
        held_from = time.monotonic()
        time.sleep(1.0)
        held = time.monotonic() - held_from
    try:
        child.wait(timeout=120)
    finally:
        child.kill()
    reader.join(timeout=30)
    assert child.returncode == 0, child.stderr.read()
    child.stderr.close()
    assert waiting == {
        "event": "stage",
        "stage": "download",
        "message": "Waiting for another process that is downloading synapse",
    }
    result = json.loads(list(lines.queue)[-1])
    assert result["event"] == "result" and result["elapsed_seconds"] >= held


def test_download_of_unknown_model_fails_cleanly(capsys):
    assert main(["download", "lungs"]) == 2
    assert "did you mean 'lung'" in capsys.readouterr().err


def test_download_rejects_a_non_positive_timeout(capsys):
    with pytest.raises(SystemExit):
        main(["download", "lung", "--timeout", "0"])
    assert "must be a positive number" in capsys.readouterr().err


def test_progress_bar_draws_bytes_on_stderr(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    bar = TerminalProgress(unit="B")
    bar(StageEvent("download", "Downloading model_final_checkpoint.model from example.org"))
    for done in (0, 1_000_000, 2_000_000):
        bar(ProgressEvent("download", done, 2_000_000))
    bar.close()
    text = stderr.getvalue()
    assert "Downloading model_final_checkpoint.model" in text
    assert "100%" in text and "2.00M/2.00M" in text


def _record(**changes) -> dict:
    record = {
        "name": "synapse",
        "filename": "model_final_checkpoint.model",
        "format": "official",
        "source": "https://example.org/w.model",
        "sha256": "ab" * 32,
        "size_bytes": 9,
        "installed_at": "2026-12-01T10:00:00+00:00",
    }
    return {**record, **changes}


@pytest.mark.parametrize(
    "damage",
    [
        {"filename": None},
        {"filename": 5},
        {"filename": "../../outside.model"},  # F-25: a record must not point outside the cache
        {"filename": "/etc/passwd"},
        {"size_bytes": "9"},
        {"sha256": None},
        "a list",
        "a folder",
        "not JSON",
    ],
    ids=[
        "filename-null",
        "filename-int",
        "filename-escapes",
        "filename-absolute",
        "size-string",
        "sha-null",
        "list",
        "folder",
        "not-json",
    ],
)
def test_a_damaged_record_is_ignored_with_a_warning_and_every_command_works(
    capsys, caplog, tiny_model, home, damage
):
    folder = home / "models" / "synapse"
    folder.mkdir(parents=True)
    (folder / "model_final_checkpoint.model").write_bytes(b"123456789")
    (home / "outside.model").write_bytes(b"123456789")
    record = folder / "record.json"
    if damage == "a folder":
        record.mkdir()
    elif damage == "not JSON":
        record.write_text("{not json")
    else:
        record.write_text(json.dumps([_record()] if damage == "a list" else _record(**damage)))

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert " no " in next(line for line in out.splitlines() if line.startswith("synapse "))
    assert "outside.model" not in out
    assert any(
        "ignoring damaged" in r.getMessage() and "record.json" in r.getMessage() for r in caplog.records
    )
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert store.installed_weights("synapse") is None
    assert main(["models", "verify", "synapse"]) == 2
    assert "not installed" in capsys.readouterr().err
    assert main(["models", "remove", "synapse"]) == 0
    assert main(["models", "import", str(tiny_model), "--name", "synapse"]) == 0
    assert (home / "outside.model").read_bytes() == b"123456789"


def test_unetrpp_home_naming_a_file_lists_models_and_refuses_installs_in_one_line(
    capsys, tiny_model, tmp_path, monkeypatch
):
    not_a_folder = tmp_path / "passwd"
    not_a_folder.write_text("root:x:0:0::/root:/bin/sh\n")
    monkeypatch.setenv("UNETRPP_HOME", str(not_a_folder))
    assert main(["models"]) == 0
    assert f"{not_a_folder} is not a folder" in capsys.readouterr().out
    for argv in (["models", "import", str(tiny_model), "--name", "synapse"], ["download", "synapse"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot create the weights folder" in err and "UNETRPP_HOME" in err
    assert not_a_folder.read_text() == "root:x:0:0::/root:/bin/sh\n"
