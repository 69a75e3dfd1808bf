"""The per-user weights cache: where weights live, how they get there, and proof they are intact.

Layout (one folder per model, shared by every Slicer version and the CLI of one user)::

    <home>/models/<name>/<filename>      the weights, exactly as downloaded or imported
    <home>/models/<name>/record.json     source, SHA256, size and date of what was installed
    <home>/locks/<name>.lock             held while a process writes the model's folder

Lock files live outside the model folders and are never deleted: a process waiting for a lock holds
the file open, and deleting it would let a third process lock a new file of the same name while the
second believes it has the lock (two writers in one folder).

``<home>`` is the per-user data folder unless the environment variable ``UNETRPP_HOME`` names another
one (``models/home.py``). Nothing is downloaded unless :func:`download` is called: the
CLI's ``unetrpp download NAME`` and the Slicer module (after asking the user) are the only callers.

The record makes corruption detectable: :func:`installed_weights` checks it cheaply (file present,
size unchanged); :func:`verify` re-hashes the file and compares it with the card's pinned SHA256, or,
when the card pins none, with the one recorded at installation (trusted on first use). Writers take the
per-model lock and rename complete files into place, so two processes installing the same model leave
one intact file.

A process killed while installing (SIGKILL, SIGTERM, power loss) may leave staging files
(``*.incoming``) and hidden temporary files in the model folder; the next writer removes them while it
holds the lock. Only ``*.part`` files (and their ``*.part.json`` validators) stay: they let the next
download resume.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from unetrpp.errors import CheckpointError, DownloadError, ModelNotFoundError, OutputExistsError, UnetrppError
from unetrpp.events import EventCallback, StageEvent, WarningEvent, emit
from unetrpp.models.archive import checkpoint_member, extract_checkpoint, name_extracted
from unetrpp.models.cards import ModelCard, WeightsSource
from unetrpp.models.download import DEFAULT_TIMEOUT_SECONDS, PART_SUFFIXES, fetch, sha256_of
from unetrpp.models.home import HOME_ENVIRONMENT_VARIABLE, model_home
from unetrpp.models.locking import exclusive_lock
from unetrpp.models.records import RECORD_NAME, WeightsRecord, read_record, utc_now, write_record
from unetrpp.models.registry import BUNDLED_SCHEME, bundled_file, find_card
from unetrpp.models.validate import check_weights_file, sniff_format, special_file_kind

__all__ = [
    "WeightsRecord",
    "model_home",
    "model_dir",
    "lock_path",
    "Verification",
    "installed_weights",
    "installed_record",
    "is_bundled",
    "verify",
    "download",
    "import_weights",
    "remove",
]

logger = logging.getLogger(__name__)

_LOCKS_FOLDER = "locks"
_STAGING_SUFFIX = ".incoming"
_IMPORT_STAGING = "import" + _STAGING_SUFFIX


def model_dir(model: str | ModelCard) -> Path:
    """Folder holding the weights of ``model`` (which may not exist yet)."""
    return model_home() / "models" / _card(model).name


def lock_path(model: str | ModelCard) -> Path:
    """The lock file every writer of ``model``'s folder holds; it is never deleted (see above)."""
    return model_home() / _LOCKS_FOLDER / f"{_card(model).name}.lock"


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
    if not path.is_file():
        logger.warning("weights of %s are recorded but %s is missing", card.name, path)
        return None
    size = path.stat().st_size
    if size != record.size_bytes:
        logger.warning("weights of %s changed size (%d, recorded %d)", card.name, size, record.size_bytes)
        return None
    return path


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` compared: the file, its SHA256 and where the expected value came from."""

    path: Path
    sha256: str
    basis: str


def verify(model: str | ModelCard) -> Verification:
    """Re-hash the installed weights and compare with the card's pinned SHA256 or the recorded one.

    A card that pins the file's SHA256 is the stronger reference (it does not trust the first
    download); without a pin the hash recorded at installation is all there is (trusted on first use).

    Raises:
        ModelNotFoundError: nothing is installed.
        CheckpointError: the file changed (corrupted disk, partial copy...) or is not the pinned one.
    """
    card = _card(model)
    path = _require_installed(card)
    record = installed_record(card)
    pinned = _pinned_source(card, record)
    if pinned is not None:
        expected, basis = pinned.sha256, "the SHA256 pinned in the model card"
    elif record is not None and record.sha256:
        origin = "imported" if record.source.startswith("file:") else "downloaded"
        expected = record.sha256
        basis = (
            f"the SHA256 recorded when it was {origin} on {record.installed_at[:10]} "
            "(trusted on first use: the model card pins no checksum)"
        )
    else:
        raise CheckpointError(
            f"the weights of {card.name!r} have no recorded or pinned SHA256 to compare with"
        )
    digest = sha256_of(path)
    if digest != expected.lower():
        raise CheckpointError(
            f"the weights of {card.name!r} at {path} are corrupted (SHA256 {digest[:12]}... differs from "
            f"{basis}); run `unetrpp download {card.name}` or `unetrpp models import` again"
        )
    return Verification(path, digest, basis)


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
    published SHA256 when there is one, and records the hash of what it installed (and says that it
    is trusted on first use when the card pins none).

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
    waiting = StageEvent("download", f"Waiting for another process that is downloading {card.name}")
    with _locked_folder(card, on_wait=lambda: emit(on_event, waiting)) as folder:
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
                _discard_staging(staging)
                errors.append(str(error))
                logger.info("source %s failed: %s", source.url, error)
                continue
            if not source.sha256:
                emit(
                    on_event,
                    WarningEvent(
                        f"the {card.name} model card pins no SHA256 for its weights, so the downloaded file "
                        f"is trusted on first use (SHA256 {digest}); `unetrpp models verify {card.name}` "
                        "compares against it from now on"
                    ),
                )
            size = staging.stat().st_size
            record = WeightsRecord(
                card.name, source.filename, source.format, source.url, digest, size, utc_now()
            )
            return _install_staged(folder, staging, record)
    manual = card.weights[0].url
    raise DownloadError(
        f"could not download {card.name!r}: {errors[-1]} -- or download {manual} by hand and run "
        f"`unetrpp models import FILE --name {card.name}`"
    )


def import_weights(path: str | Path, model: str | ModelCard, *, overwrite: bool = False) -> Path:
    """Install a weights file the user obtained by hand (offline hospitals, blocked downloads).

    The file is checked first: an official ``.model`` must be a loadable checkpoint that fits the
    card's network (variant and sizes), a ``.unetrpp`` file a loadable model of that variant with the
    card's labels. An official checkpoint's sibling plans file (``<file>.pkl``) is copied along when
    present; a zip file holding the checkpoint is unpacked (inside the model folder, size-capped).

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
        kind = "a folder" if given.is_dir() else special_file_kind(given)
        if kind is None:
            raise CheckpointError(f"no weights file at {given}")
        raise CheckpointError(f"{given} is {kind}, not a weights file; give the checkpoint file itself")
    with _locked_folder(card) as folder:
        existing = installed_weights(card)
        if existing is not None and not overwrite:
            raise OutputExistsError(
                f"weights for {card.name!r} are already installed at {existing}; add --overwrite to replace "
                f"them or run `unetrpp models remove {card.name}` first"
            )
        staging = folder / _IMPORT_STAGING
        member = checkpoint_member(given)
        try:
            # A checkpoint published inside a plain zip is installed unpacked; any other file is checked
            # where the user put it, so that errors name it.
            checked = given if extract_checkpoint(given, staging) is None else staging
            weights_format = _format_of(checked)
            check_weights_file(checked, weights_format, deep=True, card=card)
            if checked is given:
                _copy_with_plans(given, staging, with_plans=weights_format == "official")
        except CheckpointError as error:
            _discard_staging(staging)
            if member is None:
                raise
            # The extracted files are gone: name the user's zip and the member instead.
            raise type(error)(name_extracted(str(error), staging, given, member)) from error
        except BaseException:
            _discard_staging(staging)
            raise
        filename = f"{card.name}.unetrpp" if weights_format == "unetrpp" else _official_filename(card)
        record = WeightsRecord(
            card.name,
            filename,
            weights_format,
            given.resolve().as_uri(),
            sha256_of(staging),
            staging.stat().st_size,
            utc_now(),
        )
        return _install_staged(folder, staging, record)


def remove(model: str | ModelCard) -> Path:
    """Delete the installed weights of ``model`` (and any partial download); returns the folder.

    Raises:
        ModelNotFoundError: nothing is installed for it.
        UnetrppError: the model's weights ship with the package.
    """
    card = _card(model)
    if is_bundled(card):
        raise UnetrppError(f"{card.name!r} ships with unetrpp; there is nothing to remove")
    folder = model_dir(card)
    if not folder.is_dir():
        raise ModelNotFoundError(f"no weights installed for {card.name!r} (looked in {folder})")
    with _locked_folder(card):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
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


def _format_of(path: Path) -> str:
    return "unetrpp" if sniff_format(path) == "unetrpp" else "official"


def _copy_with_plans(source: Path, staging: Path, *, with_plans: bool) -> None:
    """Copy a weights file (and an official checkpoint's ``.pkl`` plans beside it) to its staging name."""
    shutil.copyfile(source, staging)
    plans = source.with_name(source.name + ".pkl")
    if with_plans and plans.is_file():
        shutil.copyfile(plans, staging.with_name(staging.name + ".pkl"))


def _pinned_source(card: ModelCard, record: WeightsRecord | None) -> WeightsSource | None:
    """The card source that pins the installed file's SHA256 (bundled weights: the card's own)."""
    if is_bundled(card):
        return card.weights[0] if card.weights[0].sha256 else None
    if record is None:
        return None
    for source in card.weights:
        # A file unpacked from a pinned zip has another hash than the pin; it counts as recorded.
        if source.sha256 and source.url == record.source and source.sha256.lower() == record.sha256:
            return source
    return None


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UnetrppError(
            f"cannot create the weights folder {folder} ({error.strerror or error}); point "
            f"{HOME_ENVIRONMENT_VARIABLE} at a writable folder"
        ) from error


@contextlib.contextmanager
def _locked_folder(card: ModelCard, on_wait: Callable[[], None] | None = None) -> Iterator[Path]:
    """Hold the model's lock; yields its folder, created and cleared of a killed run's leftovers.

    The folder is removed again when it ends up empty (a failed first install leaves no trace), while
    the lock is still held: nobody else can be writing into it.
    """
    lock = lock_path(card)
    _make_folder(lock.parent)
    with exclusive_lock(lock, on_wait=on_wait):
        folder = model_dir(card)
        _make_folder(folder)
        try:
            _remove_stale_files(folder)
            yield folder
        finally:
            with contextlib.suppress(OSError):  # not empty: fine
                folder.rmdir()


def _remove_stale_files(folder: Path) -> None:
    """Delete what a killed writer left: staging files and hidden temporaries (``*.part`` stay)."""
    for entry in folder.iterdir():
        stale = entry.name.startswith(".") or entry.name.endswith((_STAGING_SUFFIX, _STAGING_SUFFIX + ".pkl"))
        if stale and entry.is_file() and not entry.name.endswith(PART_SUFFIXES):
            logger.info("removing %s, left by an interrupted run", entry)
            entry.unlink()


def _discard_staging(staging: Path) -> None:
    staging.unlink(missing_ok=True)
    staging.with_name(staging.name + ".pkl").unlink(missing_ok=True)


def _install_staged(folder: Path, staging: Path, record: WeightsRecord) -> Path:
    """Rename checked staging files into place and record them; returns the installed weights."""
    target = folder / record.filename
    target_plans = target.with_name(target.name + ".pkl")
    staged_plans = staging.with_name(staging.name + ".pkl")
    (folder / RECORD_NAME).unlink(missing_ok=True)  # no record describes a half-replaced install
    if staged_plans.exists():
        os.replace(staged_plans, target_plans)
    else:  # plans of an earlier install would be read as this checkpoint's
        target_plans.unlink(missing_ok=True)
    os.replace(staging, target)
    _replace_install(folder, record)
    return target


def _replace_install(folder: Path, record: WeightsRecord) -> None:
    """Write ``record.json`` and delete weights files of an earlier installation under another name."""
    keep = {record.filename, record.filename + ".pkl", RECORD_NAME}
    for entry in folder.iterdir():  # includes .part files of other sources: nothing to resume any more
        if entry.is_file() and entry.name not in keep:
            entry.unlink()
    write_record(folder, record)
