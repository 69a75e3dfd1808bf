"""The weights cache: layout under UNETRPP_HOME, records, verification, concurrency, import and remove."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import platformdirs
import pytest
import torch
from loopback_http import LoopbackServer, Route
from unetrpp.errors import (
    CheckpointError,
    CheckpointMismatchError,
    DownloadError,
    ModelNotFoundError,
    OutputExistsError,
    UnetrppError,
)
from unetrpp.events import WarningEvent
from unetrpp.models import store
from unetrpp.models.cards import ModelCard, WeightsSource
from unetrpp.models.checkpoint import load_model_file
from unetrpp.models.export import export_official
from unetrpp.models.locking import exclusive_lock
from unetrpp.models.registry import find_card
from unetrpp.network import build_network


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def server():
    with LoopbackServer() as running:
        yield running


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory) -> Path:
    """A real torch checkpoint in the official layout, from a tiny synapse-variant network."""
    torch.manual_seed(0)
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4, deep_supervision=False)
    path = tmp_path_factory.mktemp("official") / "model_final_checkpoint.model"
    torch.save({"epoch": 1000, "state_dict": network.state_dict()}, path)
    return path


def _card(name: str, *urls: str, sha256: str | None = None) -> ModelCard:
    template = find_card("synapse")
    return ModelCard(
        name=name,
        title="test model",
        task=template.task,
        modality="CT",
        input_channels=("CT",),
        label_set="synapse",
        labels=template.labels,
        variant="synapse",
        patch_size_zyx=(64, 128, 128),
        weights=tuple(WeightsSource(url, "model_final_checkpoint.model", sha256=sha256) for url in urls),
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_unetrpp_home_overrides_the_per_user_folder(home, monkeypatch):
    assert store.model_home() == home
    assert store.model_dir("synapse") == home / "models" / "synapse"
    monkeypatch.delenv("UNETRPP_HOME")
    assert store.model_home() == Path(platformdirs.user_data_dir("unetrpp", appauthor=False))


def test_nothing_is_installed_or_downloaded_until_asked(home):
    assert store.installed_weights("synapse") is None
    with pytest.raises(ModelNotFoundError, match="unetrpp download synapse"):
        store.verify("synapse")
    assert not home.exists()


def test_download_installs_file_and_record(server, official_checkpoint, home):
    data = official_checkpoint.read_bytes()
    url = server.add("/synapse.model", Route(body=data))
    card = _card("tiny", url, sha256=_sha(data))
    path = store.download(card)

    assert path == home / "models" / "tiny" / "model_final_checkpoint.model"
    assert path.read_bytes() == data
    record = json.loads((home / "models" / "tiny" / "record.json").read_text())
    assert record["source"] == url and record["sha256"] == _sha(data) and record["size_bytes"] == len(data)
    assert record["format"] == "official" and record["installed_at"].endswith("+00:00")
    assert store.installed_weights(card) == path
    checked = store.verify(card)
    assert (checked.path, checked.sha256, checked.basis) == (
        path,
        _sha(data),
        "the SHA256 pinned in the model card",
    )
    # Asking again uses the cache: no second request.
    assert store.download(card) == path
    assert len(server.requests_for("/synapse.model")) == 1


def test_corruption_is_detected(server, official_checkpoint):
    data = official_checkpoint.read_bytes()
    card = _card("tiny", server.add("/w.model", Route(body=data)))
    events = []
    path = store.download(card, on_event=events.append)
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert len(warnings) == 1 and f"trusted on first use (SHA256 {_sha(data)})" in warnings[0]
    assert "trusted on first use: the model card pins no checksum" in store.verify(card).basis

    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))  # same size: only re-hashing notices
    assert store.installed_weights(card) == path
    with pytest.raises(
        CheckpointError, match="corrupted .*differs from the SHA256 recorded when it was downloaded"
    ):
        store.verify(card)

    path.write_bytes(data[:-10])  # truncated: the cheap check notices
    assert store.installed_weights(card) is None
    assert store.download(card).read_bytes() == data  # and a new download repairs it


def test_wrong_checksum_leaves_nothing_in_the_cache(server, official_checkpoint, home):
    card = _card(
        "tiny", server.add("/w.model", Route(body=official_checkpoint.read_bytes())), sha256="ab" * 32
    )
    with pytest.raises(
        DownloadError, match="could not download 'tiny'.*not the published one.*models import"
    ):
        store.download(card)
    assert not (home / "models" / "tiny").exists()
    assert store.installed_weights(card) is None


def test_web_page_instead_of_checkpoint_leaves_nothing(server, home):
    page = b"<!DOCTYPE html><html><title>Google Drive</title><body>Too many users</body></html>"
    card = _card("tiny", server.add("/w.model", Route(body=page, kind="html")))
    with pytest.raises(DownloadError, match="web page"):
        store.download(card)
    assert not (home / "models" / "tiny").exists()


def test_non_checkpoint_bytes_are_rejected_after_download(server, home):
    card = _card("tiny", server.add("/w.model", Route(body=b"just some text, not a checkpoint" * 100)))
    with pytest.raises(DownloadError, match="is not a PyTorch checkpoint"):
        store.download(card)
    assert not (home / "models" / "tiny").exists()


def test_second_source_is_used_when_the_first_fails(server, official_checkpoint):
    data = official_checkpoint.read_bytes()
    missing = server.add("/moved.model", Route(kind="status", status=404))
    mirror = server.add("/mirror.model", Route(body=data))
    card = _card("tiny", missing, mirror)
    assert store.download(card).read_bytes() == data
    assert store.installed_record(card).source == mirror


def test_concurrent_downloads_of_one_model_give_one_intact_file(server, official_checkpoint, home):
    data = official_checkpoint.read_bytes()
    route = Route(body=data, chunk_delay=0.02)  # keeps the first download running while the second waits
    card = _card("tiny", server.add("/w.model", route), sha256=_sha(data))
    results: list[Path] = []
    errors: list[BaseException] = []
    waited = threading.Event()

    def worker() -> None:
        try:
            results.append(store.download(card, on_event=lambda e: "Waiting" in str(e) and waited.set()))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    # Daemon threads: one that hangs fails the test below and cannot keep the test process alive.
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads), "a download did not finish within 60 s"
    assert not errors
    assert len(set(results)) == 1 and len(results) == 3
    assert results[0].read_bytes() == data
    assert route.served_full == 1 and waited.is_set()
    leftovers = sorted(p.name for p in (home / "models" / "tiny").iterdir())
    assert leftovers == ["model_final_checkpoint.model", "record.json"]
    assert store.lock_path(card) == home / "locks" / "tiny.lock" and store.lock_path(card).is_file()


def test_import_checks_the_checkpoint_and_records_its_hash(official_checkpoint, home):
    card = _tiny_card("tiny")
    path = store.import_weights(official_checkpoint, card)
    assert path == home / "models" / "tiny" / "model_final_checkpoint.model"
    assert path.read_bytes() == official_checkpoint.read_bytes()
    record = store.installed_record(card)
    assert record.sha256 == _sha(official_checkpoint.read_bytes())
    assert record.source == official_checkpoint.resolve().as_uri()
    assert store.verify(card).path == path
    assert "recorded when it was imported" in store.verify(card).basis
    assert sorted(p.name for p in path.parent.iterdir()) == ["model_final_checkpoint.model", "record.json"]


def test_import_refuses_a_checkpoint_of_the_right_family_but_other_sizes(official_checkpoint, home):
    # The tiny synapse-layout network (feature size 4) is not the official synapse network: refused at
    # import, not at the first segmentation.
    with pytest.raises(CheckpointMismatchError) as refused:
        store.import_weights(official_checkpoint, "synapse")
    message = str(refused.value)
    assert "\n" not in message and str(official_checkpoint) in message
    assert "does not fit the 'synapse' network" in message and "other sizes" in message
    assert store.installed_weights("synapse") is None and not (home / "models" / "synapse").exists()


def test_import_refuses_a_checkpoint_of_another_variant(official_checkpoint, home):
    with pytest.raises(CheckpointMismatchError, match="holds the 'synapse' network.*model 'tumor'"):
        store.import_weights(official_checkpoint, "tumor")
    assert store.installed_weights("tumor") is None


def test_import_refuses_a_web_page(tmp_path):
    page = tmp_path / "model_final_checkpoint.model"
    page.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    with pytest.raises(CheckpointError, match="web page"):
        store.import_weights(page, "synapse")


def test_import_does_not_overwrite_unless_asked(official_checkpoint):
    card = _tiny_card("tiny")
    store.import_weights(official_checkpoint, card)
    with pytest.raises(OutputExistsError, match="already installed.*--overwrite"):
        store.import_weights(official_checkpoint, card)
    assert store.import_weights(official_checkpoint, card, overwrite=True).is_file()


def test_remove_round_trip(official_checkpoint, home):
    card = _tiny_card("tiny")
    store.import_weights(official_checkpoint, card)
    assert store.remove(card) == home / "models" / "tiny"
    assert not (home / "models" / "tiny").exists()
    assert store.lock_path(card).is_file()  # someone may be waiting on it: never deleted
    assert store.installed_weights(card) is None
    with pytest.raises(ModelNotFoundError, match="no weights installed for 'tiny'"):
        store.remove(card)


def test_unknown_model_names_suggest_the_closest():
    with pytest.raises(ModelNotFoundError, match="did you mean 'synapse'"):
        store.installed_weights("synapes")


def test_bundled_demo_model_is_never_removed_or_replaced(official_checkpoint):
    card = find_card("demo")
    assert store.is_bundled(card)
    with pytest.raises(UnetrppError, match="ships with unetrpp"):
        store.remove(card)
    with pytest.raises(UnetrppError, match="ships with unetrpp"):
        store.import_weights(official_checkpoint, card)


def _tiny_card(name: str) -> ModelCard:
    """The synapse card, but for the tiny network of ``official_checkpoint``."""
    synapse = find_card("synapse")
    plans = dataclasses.replace(synapse.plans, patch_size_zyx=(16, 32, 32))
    overrides = {"patch_size": [16, 32, 32], "feature_size": 4, "deep_supervision": False}
    return dataclasses.replace(synapse, name=name, network_overrides=overrides, plans=plans)


def test_export_official_to_unetrpp_then_import_round_trip(official_checkpoint, tmp_path):
    card = _tiny_card("tiny")
    output = export_official(official_checkpoint, tmp_path / "tiny.unetrpp", card)

    loaded = load_model_file(output)
    assert loaded.card.labels == card.labels and loaded.plans == card.plans
    original = torch.load(official_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    exported = loaded.network.state_dict()
    assert set(exported) == set(original)
    assert all(torch.equal(exported[key], original[key]) for key in original)

    with pytest.raises(OutputExistsError):
        export_official(official_checkpoint, output, card)

    installed = store.import_weights(output, card)
    assert installed.name == "tiny.unetrpp" and installed.read_bytes() == output.read_bytes()
    assert store.installed_record(card).format == "unetrpp"
    assert load_model_file(store.verify(card).path).card.name == "tiny"


def test_export_refuses_a_checkpoint_of_another_model(official_checkpoint, tmp_path):
    with pytest.raises(CheckpointMismatchError):
        export_official(official_checkpoint, tmp_path / "acdc.unetrpp", "acdc")
    assert not (tmp_path / "acdc.unetrpp").exists()


def _wrap_in_zip(checkpoint: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(checkpoint, "unetr_pp_lung/fold_0/model_final_checkpoint.model")
    return zip_path


def test_checkpoint_published_inside_a_zip_is_installed_unpacked(server, official_checkpoint, tmp_path):
    wrapped = _wrap_in_zip(official_checkpoint, tmp_path / "weights.zip").read_bytes()
    card = _card("tiny", server.add("/weights.zip", Route(body=wrapped)))
    path = store.download(card)
    assert path.read_bytes() == official_checkpoint.read_bytes()
    assert store.installed_record(card).sha256 == _sha(official_checkpoint.read_bytes())
    assert store.verify(card).path == path


def test_import_unpacks_a_zip_holding_the_checkpoint(official_checkpoint, tmp_path):
    wrapped = _wrap_in_zip(official_checkpoint, tmp_path / "synapse_weights.zip")
    card = _tiny_card("tiny")
    path = store.import_weights(wrapped, card)
    assert path.name == "model_final_checkpoint.model"
    assert path.read_bytes() == official_checkpoint.read_bytes()
    assert store.installed_record(card).source == wrapped.resolve().as_uri()


def test_two_processes_downloading_one_model_leave_one_intact_file(
    server, official_checkpoint, home, tmp_path
):
    data = official_checkpoint.read_bytes()
    route = Route(body=data, chunk_delay=0.02)
    card = _card("tiny", server.add("/w.model", route), sha256=_sha(data))
    card_file = tmp_path / "card.json"
    card_file.write_text(json.dumps(card.to_dict()))
    code = (
        "import json, sys\n"
        "from unetrpp.models import store\n"
        "from unetrpp.models.cards import ModelCard\n"
        "print(store.download(ModelCard.from_dict(json.load(open(sys.argv[1])))))\n"
    )
    environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(card_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {
        str(home / "models" / "tiny" / "model_final_checkpoint.model")
    }
    assert route.served_full == 1
    assert store.verify(card).path.read_bytes() == data


def test_failed_forced_download_keeps_the_installed_weights(server, official_checkpoint):
    data = official_checkpoint.read_bytes()
    route = Route(body=data)
    card = _card("tiny", server.add("/w.model", route))
    path = store.download(card)
    route.kind, route.body = "html", b"<html><body>Quota exceeded</body></html>"
    with pytest.raises(DownloadError, match="web page"):
        store.download(card, force=True)
    assert store.installed_weights(card) == path
    assert store.verify(card).path.read_bytes() == data


def test_interrupted_download_resumes_on_the_next_call(server, official_checkpoint, home):
    data = official_checkpoint.read_bytes()
    card = _card("tiny", server.add("/w.model", Route(body=data, cut_after=2_000_000, cut_times=1)))
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        store.download(card, retries=0)
    assert store.installed_weights(card) is None
    assert [p.stat().st_size for p in (home / "models" / "tiny").glob("*.part")] == [2_000_000]

    assert store.download(card).read_bytes() == data
    assert server.requests_for("/w.model")[-1].headers["Range"] == "bytes=2000000-"
    assert not list((home / "models" / "tiny").glob("*.part"))


def test_lock_of_a_killed_process_is_released_at_once(tmp_path):
    lock = tmp_path / ".lock"
    code = (
        "import sys, time\n"
        "from unetrpp.models.locking import exclusive_lock\n"
        "with exclusive_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        first_line: list[str] = []
        reader = threading.Thread(target=lambda: first_line.append(holder.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=120)  # a holder that hangs before printing fails the test, never stalls it
        assert first_line and first_line[0].strip() == "locked", "the lock holder never reported"
        with pytest.raises(TimeoutError, match="still locked"), exclusive_lock(lock, timeout_seconds=0.3):
            pass
    finally:
        holder.kill()  # a crash while downloading: no chance to clean up
        holder.wait(timeout=30)
        holder.stdout.close()
    with exclusive_lock(lock, timeout_seconds=5):
        assert lock.exists()


_DOWNLOADER = (
    "import json, sys\n"
    "from unetrpp.errors import UnetrppError\n"
    "from unetrpp.models import store\n"
    "from unetrpp.models.cards import ModelCard\n"
    "card = ModelCard.from_dict(json.load(open(sys.argv[1])))\n"
    "def on_event(event):\n"
    "    if 'Waiting' in getattr(event, 'message', ''):\n"
    "        print('waiting', flush=True)\n"
    "try:\n"
    "    print('installed', store.download(card, on_event=on_event, retries=0), flush=True)\n"
    "except UnetrppError as error:\n"
    "    print('failed', error, flush=True)\n"
)


class _Downloader:
    """A real process running ``store.download``; its stdout lines arrive on a queue."""

    def __init__(self, card_file: Path) -> None:
        environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _DOWNLOADER, str(card_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next_line(self, timeout: float = 120) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s") from None

    def finish(self) -> str:
        """The last line after the process ended."""
        try:
            self.process.wait(timeout=120)
        finally:
            self.process.kill()
            self.process.stderr.close()
        last = self.next_line(30)
        while not self.lines.empty():
            last = self.lines.get()
        return last


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _card_file(card: ModelCard, tmp_path: Path) -> Path:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card.to_dict()))
    return path


def test_the_lock_survives_a_failed_download_three_processes(server, official_checkpoint, home, tmp_path):
    # A holds the lock and fails (404); B was waiting and downloads; C arrives while B downloads and
    # must wait for B, not lock a fresh file of its own (the lock was deleted with the folder before).
    data = official_checkpoint.read_bytes()
    answer_a, finish_b = threading.Event(), threading.Event()
    route = Route(body=data, hold=answer_a, hold_times=1, hold_status=404, pause=finish_b)
    card = _card("tiny", server.add("/w.model", route))
    card_file = _card_file(card, tmp_path)
    try:
        a = _Downloader(card_file)
        _wait_for(lambda: route.requests == 1, "A's request")
        b = _Downloader(card_file)
        assert b.next_line() == "waiting"
        answer_a.set()
        _wait_for(lambda: route.requests == 2, "B's request")
        c = _Downloader(card_file)
        _wait_for(lambda: not c.lines.empty() or route.requests > 2, "C to wait or to download")
        assert route.requests == 2, "C downloaded while B held the lock"
        assert c.next_line() == "waiting"
    finally:
        answer_a.set()
        finish_b.set()
    assert "404 Not Found" in a.finish()
    installed = home / "models" / "tiny" / "model_final_checkpoint.model"
    assert b.finish() == c.finish() == f"installed {installed}"
    assert route.requests == 2 and route.served_full == 1
    assert store.verify(card).path.read_bytes() == data


def test_remove_keeps_the_lock_file_so_a_waiting_writer_still_excludes_others(official_checkpoint, home):
    card = _tiny_card("tiny")
    store.import_weights(official_checkpoint, card)
    lock = store.lock_path(card)
    inode = lock.stat().st_ino
    store.remove(card)
    assert lock.stat().st_ino == inode


def test_stale_files_of_a_killed_run_are_removed_by_the_next_one(official_checkpoint, home):
    card = _tiny_card("tiny")
    folder = home / "models" / "tiny"
    folder.mkdir(parents=True)
    stale = [
        ".model_final_checkpoint.model.3f2a9c.tmp",  # atomic_output's temporary
        ".record.json.77aa.tmp",
        ".model_final_checkpoint.model.incoming.k2j3",  # a zip member being extracted
        "import.incoming",
        "import.incoming.pkl",
        "model_final_checkpoint.model.incoming",
    ]
    for name in stale:
        (folder / name).write_bytes(b"left by a killed run")
    (folder / "model_final_checkpoint.model.incoming.part").write_bytes(b"resumable")
    (folder / "model_final_checkpoint.model.incoming.part.json").write_text('{"if_range": "\\"x\\""}')

    not_weights = home / "notes.model"
    not_weights.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):  # a failed run cleans up too, and keeps what can resume
        store.import_weights(not_weights, card)
    assert sorted(p.name for p in folder.iterdir()) == [
        "model_final_checkpoint.model.incoming.part",
        "model_final_checkpoint.model.incoming.part.json",
    ]
    store.import_weights(official_checkpoint, card)
    assert sorted(p.name for p in folder.iterdir()) == ["model_final_checkpoint.model", "record.json"]


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_download_leaves_only_resumable_files_and_the_next_run_resumes(
    server, official_checkpoint, home, tmp_path, signal_number
):
    data = official_checkpoint.read_bytes()
    go_on = threading.Event()
    route = Route(body=data, pause=go_on)
    card = _card("tiny", server.add("/w.model", route))
    folder = home / "models" / "tiny"
    part = folder / "model_final_checkpoint.model.incoming.part"
    try:
        child = _Downloader(_card_file(card, tmp_path))
        _wait_for(lambda: part.exists() and part.stat().st_size > 0, "the first bytes")
        child.process.send_signal(signal_number)
        child.process.wait(timeout=60)
    finally:
        go_on.set()
    child.process.stderr.close()
    assert sorted(p.name for p in folder.iterdir()) == [part.name, part.name + ".json"]  # nothing hidden
    kept = part.stat().st_size

    assert store.download(card).read_bytes() == data
    assert server.requests_for("/w.model")[-1].headers["Range"] == f"bytes={kept}-"
    assert sorted(p.name for p in folder.iterdir()) == ["model_final_checkpoint.model", "record.json"]


def test_a_zip_with_a_bad_crc_is_refused_in_one_line(official_checkpoint, home, tmp_path):
    wrapped = bytearray(_wrap_in_zip(official_checkpoint, tmp_path / "weights.zip").read_bytes())
    wrapped[len(wrapped) // 2] ^= 0xFF  # inside the stored checkpoint member
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(wrapped))
    with pytest.raises(CheckpointError, match=r"damaged\.zip is a damaged zip file \(Bad CRC-32") as refused:
        store.import_weights(damaged, _tiny_card("tiny"))
    assert "\n" not in str(refused.value)
    assert not (home / "models" / "tiny").exists()


@pytest.mark.parametrize("cut", [700, "half"])
def test_import_of_a_truncated_checkpoint_says_it_is_truncated(official_checkpoint, home, tmp_path, cut):
    data = official_checkpoint.read_bytes()
    truncated = tmp_path / "model_final_checkpoint.model"
    truncated.write_bytes(data[: len(data) // 2 if cut == "half" else len(data) - cut])
    with pytest.raises(CheckpointError) as refused:
        store.import_weights(truncated, _tiny_card("tiny"))
    message = str(refused.value)
    assert "not a PyTorch checkpoint" not in message
    assert message == f"{truncated} is truncated (its zip directory is missing); download it again"
    assert not (home / "models" / "tiny").exists()


def test_import_of_a_device_a_pipe_or_a_folder_names_what_it_is(home, tmp_path):
    """'no weights file at /dev/zero' said the file was missing; it exists, and is no weights file."""
    pipe = tmp_path / "weights.fifo"
    os.mkfifo(pipe)
    cases = ((Path("/dev/zero"), "a character device"), (pipe, "a named pipe"), (tmp_path, "a folder"))
    for given, kind in cases:
        with pytest.raises(CheckpointError) as refused:
            store.import_weights(given, _tiny_card("tiny"))
        assert str(refused.value) == f"{given} is {kind}, not a weights file; give the checkpoint file itself"
    with pytest.raises(CheckpointError, match="no weights file at"):
        store.import_weights(tmp_path / "missing.model", _tiny_card("tiny"))
    assert not (home / "models" / "tiny").exists()


@pytest.mark.parametrize("damaged", ["plans", "checkpoint"])
def test_errors_from_a_zip_import_name_the_zip_and_its_member(official_checkpoint, home, tmp_path, damaged):
    member = "unetr_pp_synapse/fold_0/model_final_checkpoint.model"
    data = official_checkpoint.read_bytes()
    wrapped = tmp_path / "weights.zip"
    with zipfile.ZipFile(wrapped, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(member, data[: len(data) // 2] if damaged == "checkpoint" else data)
        archive.writestr(member + ".pkl", b"these bytes are no pickle")
    with pytest.raises(CheckpointError) as refused:
        store.import_weights(wrapped, _tiny_card("tiny"))
    message = str(refused.value)
    assert "\n" not in message and str(home) not in message and ".incoming" not in message
    named = (
        f"'{member}.pkl' in {wrapped} is not a readable plans pickle"
        if damaged == "plans"
        else f"'{member}' in {wrapped} is truncated"
    )
    assert message.startswith(named), message
    assert not (home / "models" / "tiny").exists()


@pytest.mark.parametrize(
    "outside", ["../../outside/model_final_checkpoint.model", "/etc/model_final_checkpoint.model"]
)
def test_a_zip_with_a_member_outside_it_is_refused_naming_the_member(
    official_checkpoint, home, tmp_path, outside
):
    traversal = tmp_path / "traversal.zip"
    with zipfile.ZipFile(traversal, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(outside), official_checkpoint.read_bytes())
        archive.writestr(zipfile.ZipInfo(outside + ".pkl"), b"junk")
    with pytest.raises(CheckpointError) as refused:
        store.import_weights(traversal, _tiny_card("tiny"))
    assert str(refused.value) == (
        f"{traversal} holds '{outside}', a path outside the archive (a tampered file?); nothing was extracted"
    )
    assert not (home / "models" / "tiny").exists()


def test_a_zip_bomb_is_refused_before_anything_is_extracted(home, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("fold_0/model_final_checkpoint.model", "w") as member,
    ):
        for _ in range(64):
            member.write(bytes(1 << 20))  # 64 MB of zeros in about 64 kB
    monkeypatch.setenv("TMPDIR", str(tmp_path / "no-such-tmp"))  # nothing may go to a temporary folder
    with pytest.raises(CheckpointError, match=r"would expand from 0\.1 MB to 67 MB.*nothing was extracted"):
        store.import_weights(bomb, _tiny_card("tiny"))
    assert not (home / "models" / "tiny").exists()
