"""The per-user weights cache: where weights live, how they get there, and proof they are intact.

Layout (one folder per model, shared by every Slicer version and the CLI of one user)::

    <home>/models/<name>/<filename>      the weights, exactly as downloaded or imported
    <home>/models/<name>/record.json     source, SHA256, size and date of what was installed
    <home>/models/<name>/.lock           held while a process writes the folder

``<home>`` is the per-user data folder unless the environment variable ``UNETRPP_HOME`` names another
one (``models/home.py``). Nothing is downloaded unless :func:`download` is called: the
CLI's ``unetrpp download NAME`` and the Slicer module (after asking the user) are the only callers.

The record makes corruption detectable: :func:`installed_weights` checks it cheaply (file present,
size unchanged); :func:`verify` re-hashes the file. Writers take a per-model lock and rename complete
files into place, so two processes installing the same model leave one intact file.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
from pathlib import Path

from unetrpp.atomic import atomic_output
from unetrpp.errors import CheckpointError, DownloadError, ModelNotFoundError, OutputExistsError, UnetrppError
from unetrpp.events import EventCallback, StageEvent, emit
from unetrpp.models.archive import extract_checkpoint
from unetrpp.models.cards import ModelCard
from unetrpp.models.download import DEFAULT_TIMEOUT_SECONDS, fetch, sha256_of
from unetrpp.models.home import model_home
from unetrpp.models.locking import exclusive_lock
from unetrpp.models.records import RECORD_NAME, WeightsRecord, read_record, utc_now, write_record
from unetrpp.models.registry import BUNDLED_SCHEME, bundled_file, find_card
from unetrpp.models.validate import check_weights_file, sniff_format

__all__ = [
    "WeightsRecord",
    "model_home",
    "model_dir",
    "installed_weights",
    "installed_record",
    "is_bundled",
    "verify",
    "download",
    "import_weights",
    "remove",
]

logger = logging.getLogger(__name__)

_LOCK_NAME = ".lock"
_STAGING_SUFFIX = ".incoming"


def model_dir(model: str | ModelCard) -> Path:
    """Folder holding the weights of ``model`` (which may not exist yet)."""
    return model_home() / "models" / _card(model).name


def is_bundled(model: str | ModelCard) -> bool:
    """True for models whose weights ship inside the package (the demo model)."""
    card = _card(model)
    return bool(card.weights) and card.weights[0].url.startswith(BUNDLED_SCHEME)


def installed_record(model: str | ModelCard) -> WeightsRecord | None:
    """The record of the installed weights, or None when nothing (valid) is installed."""
    card = _card(model)
    if is_bundled(card):
        path = bundled_file(card)
        if path is None:
            return None
        stat = path.stat()
        installed_at = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc)
        source = card.weights[0]
        return WeightsRecord(
            card.name, path.name, source.format, source.url, "", stat.st_size, installed_at.isoformat()
        )
    return read_record(model_dir(card))


def installed_weights(model: str | ModelCard) -> Path | None:
    """Path of the installed weights, or None if they are missing or visibly damaged.

    Cheap: checks that the file exists and still has the recorded size. Use :func:`verify` to
    re-hash it.
    """
    card = _card(model)
    if is_bundled(card):
        return bundled_file(card)
    record = installed_record(card)
    if record is None:
        return None
    path = model_dir(card) / record.filename
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        logger.warning("weights of %s are recorded but %s is missing", card.name, path)
        return None
    if size != record.size_bytes:
        logger.warning("weights of %s changed size (%d, recorded %d)", card.name, size, record.size_bytes)
        return None
    return path


def verify(model: str | ModelCard) -> Path:
    """Re-hash the installed weights and compare with the recorded SHA256.

    Raises:
        ModelNotFoundError: nothing is installed.
        CheckpointError: the file changed since it was installed (corrupted disk, partial copy...).
    """
    card = _card(model)
    path = _require_installed(card)
    record = installed_record(card)
    expected = record.sha256 if record and record.sha256 else None
    if expected is None:  # bundled: compare with the card's published hash, if any
        expected = card.weights[0].sha256 if card.weights else None
    if expected and sha256_of(path) != expected:
        raise CheckpointError(
            f"the weights of {card.name!r} at {path} are corrupted (SHA256 differs from the one recorded "
            f"at installation); run `unetrpp download {card.name}` or `unetrpp models import` again"
        )
    return path


def download(
    model: str | ModelCard,
    *,
    on_event: EventCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retries: int = 2,
    force: bool = False,
) -> Path:
    """Install the weights of ``model`` from the card's sources, unless they already are installed.

    Tries each source of the card in order, resumes an interrupted download, verifies the
    published SHA256 when there is one, and records the hash of what it installed.

    Args:
        model: registry name or a card.
        on_event: receives download stage and byte progress events.
        timeout: seconds without data before a source counts as stalled.
        retries: resume attempts per source after a dropped connection.
        force: download again even if valid weights are installed.

    Raises:
        DownloadError: no source delivered a valid file; names the last problem and the manual route.
    """
    card = _card(model)
    if is_bundled(card):
        path = bundled_file(card)
        if path is None:
            raise ModelNotFoundError(
                f"the bundled weights of {card.name!r} are missing from this installation"
            )
        return path
    if not card.weights:
        raise DownloadError(
            f"model {card.name!r} has no download source; install it with `unetrpp models import`"
        )
    folder = model_dir(card)
    folder.mkdir(parents=True, exist_ok=True)
    waiting = StageEvent("download", f"Waiting for another process that is downloading {card.name}")
    with exclusive_lock(folder / _LOCK_NAME, on_wait=lambda: emit(on_event, waiting)):
        existing = installed_weights(card)
        if existing is not None and not force:
            logger.info("%s is already installed at %s", card.name, existing)
            return existing
        errors: list[str] = []
        for source in card.weights:
            # Downloaded under a staging name: installed weights are only ever replaced by checked ones.
            staging = folder / (source.filename + _STAGING_SUFFIX)
            try:
                result = fetch(
                    source.url,
                    staging,
                    expected_sha256=source.sha256,
                    timeout=timeout,
                    retries=retries,
                    on_event=on_event,
                    description=f"the {card.name} weights",
                )
                digest = result.sha256
                if source.format == "official" and extract_checkpoint(staging, staging) is not None:
                    logger.info("unpacked the checkpoint from the zip file downloaded for %s", card.name)
                    digest = sha256_of(staging)
                check_weights_file(staging, source.format, deep=False)
            except (DownloadError, CheckpointError) as error:
                staging.unlink(missing_ok=True)
                staging.with_name(staging.name + ".pkl").unlink(missing_ok=True)
                errors.append(str(error))
                logger.info("source %s failed: %s", source.url, error)
                continue
            target = folder / source.filename
            record = WeightsRecord(
                card.name,
                source.filename,
                source.format,
                source.url,
                digest,
                staging.stat().st_size,
                utc_now(),
            )
            (folder / RECORD_NAME).unlink(missing_ok=True)  # no record describes a half-replaced install
            plans = staging.with_name(staging.name + ".pkl")
            if plans.exists():
                os.replace(plans, target.with_name(target.name + ".pkl"))
            os.replace(staging, target)
            _replace_install(folder, record)
            return target
    _remove_if_empty(folder)  # after releasing the lock: a failed download leaves no trace but .part files
    manual = card.weights[0].url
    raise DownloadError(
        f"could not download {card.name!r}: {errors[-1]} -- or download {manual} by hand and run "
        f"`unetrpp models import FILE --name {card.name}`"
    )


def import_weights(path: str | Path, model: str | ModelCard, *, overwrite: bool = False) -> Path:
    """Install a weights file the user obtained by hand (offline hospitals, blocked downloads).

    The file is checked first: an official ``.model`` must be a loadable checkpoint of the card's
    network variant, a ``.unetrpp`` file a loadable model of that variant with the card's labels.
    An official checkpoint's sibling plans file (``<file>.pkl``) is copied along when present; a zip
    file holding the checkpoint is unpacked.

    Returns:
        The installed file inside the cache.

    Raises:
        CheckpointError: missing file, not a checkpoint (e.g. a saved web page), unreadable.
        CheckpointMismatchError: a checkpoint of another network than the card's.
        OutputExistsError: weights are installed and ``overwrite`` is False.
    """
    card = _card(model)
    if is_bundled(card):
        raise UnetrppError(f"{card.name!r} ships with unetrpp; its weights cannot be replaced")
    given = Path(path).expanduser()
    if not given.is_file():
        raise CheckpointError(f"no weights file at {given}")
    with tempfile.TemporaryDirectory(prefix="unetrpp-import-") as unpacked:
        # A checkpoint published inside a plain zip is installed unpacked.
        source = extract_checkpoint(given, Path(unpacked) / _official_filename(card)) or given
        return _install_file(source, card, origin=given.resolve().as_uri(), overwrite=overwrite)


def _install_file(source: Path, card: ModelCard, *, origin: str, overwrite: bool) -> Path:
    weights_format = "unetrpp" if sniff_format(source) == "unetrpp" else "official"
    check_weights_file(source, weights_format, deep=True, card=card)
    filename = f"{card.name}.unetrpp" if weights_format == "unetrpp" else _official_filename(card)
    folder = model_dir(card)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / _LOCK_NAME):
        existing = installed_weights(card)
        if existing is not None and not overwrite:
            raise OutputExistsError(
                f"weights for {card.name!r} are already installed at {existing}; add --overwrite to replace "
                f"them or run `unetrpp models remove {card.name}` first"
            )
        target = folder / filename
        digest = _copy_atomically(source, target)
        plans = source.with_name(source.name + ".pkl")
        if weights_format == "official" and plans.is_file():
            _copy_atomically(plans, target.with_name(target.name + ".pkl"))
        record = WeightsRecord(
            card.name,
            filename,
            weights_format,
            origin,
            digest,
            target.stat().st_size,
            utc_now(),
        )
        _replace_install(folder, record)
    return target


def remove(model: str | ModelCard) -> Path:
    """Delete the installed weights of ``model``; returns the folder that was removed.

    Raises:
        ModelNotFoundError: nothing is installed for it.
        UnetrppError: the model's weights ship with the package.
    """
    card = _card(model)
    if is_bundled(card):
        raise UnetrppError(f"{card.name!r} ships with unetrpp; there is nothing to remove")
    folder = model_dir(card)
    if not folder.exists():
        raise ModelNotFoundError(f"no weights installed for {card.name!r} (looked in {folder})")
    with exclusive_lock(folder / _LOCK_NAME):
        for entry in folder.iterdir():
            if entry.name == _LOCK_NAME:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    (folder / _LOCK_NAME).unlink(missing_ok=True)
    _remove_if_empty(folder)
    return folder


def _card(model: str | ModelCard) -> ModelCard:
    return model if isinstance(model, ModelCard) else find_card(model)


def _require_installed(card: ModelCard) -> Path:
    path = installed_weights(card)
    if path is None:
        raise ModelNotFoundError(
            f"weights for {card.name!r} are not installed; run `unetrpp download {card.name}` or "
            f"`unetrpp models import FILE --name {card.name}`"
        )
    return path


def _official_filename(card: ModelCard) -> str:
    for source in card.weights:
        if source.format == "official":
            return source.filename
    return "model_final_checkpoint.model"


def _copy_atomically(source: Path, target: Path) -> str:
    """Copy to a unique temporary name beside ``target``, then rename; returns the SHA256 of the copy."""
    with atomic_output(target) as temporary:
        shutil.copyfile(source, temporary)
        digest = sha256_of(temporary)
    return digest


def _replace_install(folder: Path, record: WeightsRecord) -> None:
    """Write ``record.json`` and delete weights files of an earlier installation under another name."""
    keep = {record.filename, record.filename + ".pkl", RECORD_NAME, _LOCK_NAME}
    for entry in folder.iterdir():  # includes .part files of other sources: nothing to resume any more
        if entry.is_file() and entry.name not in keep:
            entry.unlink()
    write_record(folder, record)


def _remove_if_empty(folder: Path) -> None:
    leftovers = [entry for entry in folder.iterdir() if entry.name != _LOCK_NAME] if folder.exists() else []
    if folder.exists() and not leftovers:
        shutil.rmtree(folder, ignore_errors=True)
