"""HTTP transfer of one weights file: streaming, resume, verification, and clear failures.

What can go wrong with a multi-hundred-megabyte download from Google Drive or SharePoint, and what
this module does about it:

- The connection drops: the bytes so far stay in ``<file>.part``; the next attempt asks for the rest
  with an HTTP ``Range`` header. A server that ignores ``Range`` (answers 200) restarts from zero.
- The file changes on the server between two attempts (a new upload): the first response's validator
  (strong ``ETag``, else ``Last-Modified``) is kept in ``<file>.part.json`` and sent as ``If-Range``, so a
  changed file comes back whole (200) and the download restarts from zero instead of gluing the head of
  one version to the tail of another. Without a validator nothing is resumed.
- The server stalls: every socket read has a timeout, reported as "no data from HOST for N s".
- Google Drive answers with a web page instead of the file (the "can't scan for viruses"
  confirmation for large files, or a quota message): a confirmation form is followed, anything else
  is an error that says so instead of installing HTML as a checkpoint.
- The bytes are wrong: the SHA256 is checked when the publisher gave one; a mismatch deletes the file.

Proxies come from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``) through
``urllib.request.ProxyHandler``, which is how hospital networks are usually set up.
The destination is written only by ``os.replace`` of the completed, verified ``.part`` file; callers
that may run concurrently hold a lock around :func:`fetch` (see ``store.py``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from unetrpp import __version__
from unetrpp.errors import DownloadError
from unetrpp.events import EventCallback, ProgressEvent, StageEvent, emit
from unetrpp.models.share_links import direct_download_url, drive_confirmation_url, looks_like_html

__all__ = ["DownloadResult", "PART_SUFFIXES", "fetch", "sha256_of", "build_opener"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0
_CHUNK_BYTES = 1 << 20
_EVENT_INTERVAL_SECONDS = 0.25
_MAX_HTML_BYTES = 2 << 20
_MAX_CONFIRMATIONS = 2
_PART = ".part"
_VALIDATOR = ".part.json"
# Endings of the files an interrupted download keeps so that the next one can resume.
PART_SUFFIXES = (_PART, _VALIDATOR)


@dataclass(frozen=True)
class DownloadResult:
    """A completed, verified download."""

    path: Path
    url: str
    sha256: str
    size_bytes: int
    resumed_from_bytes: int = 0


def build_opener() -> urllib.request.OpenerDirector:
    """A urllib opener whose ``ProxyHandler`` takes the proxies from the environment."""
    return urllib.request.build_opener(urllib.request.ProxyHandler(urllib.request.getproxies()))


def sha256_of(path: str | Path) -> str:
    """Hex SHA256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    url: str,
    destination: str | Path,
    *,
    expected_sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retries: int = 0,
    on_event: EventCallback | None = None,
    description: str | None = None,
) -> DownloadResult:
    """Download ``url`` to ``destination``, resuming a previous ``destination.part`` if there is one.

    Args:
        url: a direct URL or a Google Drive / SharePoint sharing link (see :func:`direct_download_url`).
        destination: final path; it appears only once the whole file is there and verified.
        expected_sha256: hex digest to check; None accepts any content (the digest is still returned).
        timeout: seconds without any data before giving up (connect and each read).
        retries: extra attempts, each resuming where the last stopped, after a dropped connection.
        on_event: receives ``StageEvent("download")`` and ``ProgressEvent("download", bytes, total)``
            (total 0 when the server does not say).
        description: what is downloaded, for the stage message (default: the file name).

    Returns:
        The final path, its SHA256 and size.

    Raises:
        DownloadError: one line naming the host and what went wrong (404, web page instead of a file,
            timeout, checksum mismatch, dropped connection: run again to resume).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + _PART)
    source = direct_download_url(url)
    host = urllib.parse.urlsplit(source).hostname or source
    emit(on_event, StageEvent("download", f"Downloading {description or destination.name} from {host}"))
    opener = build_opener()
    attempt = 0
    while True:
        try:
            resumed_from = _transfer(opener, source, part, timeout, on_event)
            break
        except _ConnectionDropped as dropped:
            if attempt >= retries:
                raise DownloadError(
                    f"the connection to {host} dropped after {_megabytes(dropped.received)} of "
                    f"{_megabytes(dropped.total) if dropped.total else 'unknown size'}; run the same command "
                    "again to resume"
                ) from dropped.__cause__
            attempt += 1
            logger.info("connection to %s dropped; resuming (attempt %d of %d)", host, attempt, retries)
    digest = sha256_of(part)
    size = part.stat().st_size
    _validator_path(part).unlink(missing_ok=True)
    if expected_sha256 and digest.lower() != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"the file from {host} is not the published one (SHA256 {digest[:12]}..., expected "
            f"{expected_sha256[:12]}...); it was deleted, try again later"
        )
    os.replace(part, destination)
    return DownloadResult(destination, url, digest, size, resumed_from)


class _ConnectionDropped(Exception):
    def __init__(self, received: int, total: int) -> None:
        super().__init__(f"connection dropped after {received} of {total} bytes")
        self.received = received
        self.total = total


def _transfer(
    opener: urllib.request.OpenerDirector,
    url: str,
    part: Path,
    timeout: float,
    on_event: EventCallback | None,
) -> int:
    """Fill ``part`` with the body of ``url``; returns the byte offset it resumed from."""
    host = urllib.parse.urlsplit(url).hostname or url
    for _ in range(_MAX_CONFIRMATIONS + 1):
        validator = _read_validator(part)
        offset = part.stat().st_size if part.exists() and validator else 0
        try:
            response = _open(opener, url, offset, validator, timeout, host)
        except _RangeNotSatisfiable as refused:
            if refused.total == offset:  # the .part already holds the whole file
                return offset
            part.unlink()  # longer than the file or unknown: start over
            response = _open(opener, url, 0, None, timeout, host)
            offset = 0
        with response:
            status = response.status
            content_type = response.headers.get("Content-Type")
            if status == 206 and _validator_of(response) not in (None, validator):
                # A server that ignored If-Range and sent the rest of another version: start over.
                logger.info("the file on %s changed since the first part was downloaded; restarting", host)
                response.close()
                part.unlink()
                continue
            if status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != offset:
                    raise DownloadError(
                        f"{host} resumed at byte {start} instead of {offset}; delete {part} and retry"
                    )
            else:  # 200: a fresh body (the file changed, or the server ignored our Range header)
                if offset:
                    logger.info("%s sent the whole file instead of the rest; restarting from zero", host)
                offset, total = 0, _content_length(response)
            first = _read(response, min(_CHUNK_BYTES, 64 * 1024), host, timeout, offset, total)
            if looks_like_html(first if offset == 0 else b"", content_type):
                page = first + _read(response, _MAX_HTML_BYTES, host, timeout, len(first), total)
                confirmation = drive_confirmation_url(page, url)
                if confirmation is None:
                    raise DownloadError(
                        f"{host} sent a web page instead of the weights file (Google Drive does this when "
                        "its download quota is exceeded or it wants a confirmation); try again later, or "
                        "download the file in a browser and install it with "
                        "`unetrpp models import FILE --name NAME`"
                    )
                logger.info("following the download confirmation form of %s", host)
                url = confirmation
                continue
            if not offset:
                _write_validator(part, _validator_of(response))
            mode = "ab" if offset else "wb"
            with open(part, mode) as sink:
                sink.write(first)
                _stream(response, sink, offset + len(first), total, host, timeout, on_event)
            return offset
    raise DownloadError(
        f"{host} kept answering with confirmation pages; download the file in a browser instead"
    )


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name[: -len(_PART)] + _VALIDATOR)


def _validator_of(response: http.client.HTTPResponse) -> str | None:
    """What identifies this version of the file for ``If-Range``: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range accepts strong validators only
        return etag
    return response.headers.get("Last-Modified")


def _read_validator(part: Path) -> str | None:
    """The validator of the file whose first bytes ``part`` holds; None when unknown (no resume)."""
    try:
        value = json.loads(_validator_path(part).read_text(encoding="utf-8")).get("if_range")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _write_validator(part: Path, validator: str | None) -> None:
    """Keep the validator beside the ``.part`` file before its first byte is written."""
    path = _validator_path(part)
    if validator is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps({"if_range": validator}), encoding="utf-8")


def _open(
    opener: urllib.request.OpenerDirector,
    url: str,
    offset: int,
    validator: str | None,
    timeout: float,
    host: str,
):
    headers = {"User-Agent": f"unetrpp/{__version__}", "Accept": "*/*"}
    if offset and validator:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            raise _RangeNotSatisfiable(_parse_content_range(error.headers.get("Content-Range"))[1]) from error
        if error.code == 404:
            raise DownloadError(
                f"{host} answered 404 Not Found for {url}: the file was moved or removed"
            ) from error
        raise DownloadError(f"{host} answered {error.code} {error.reason} for {url}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise DownloadError(
                f"no answer from {host} for {timeout:g} s; check the network and retry"
            ) from error
        raise DownloadError(
            f"cannot reach {host} ({error.reason}); check the network or the HTTPS_PROXY setting"
        ) from error
    except TimeoutError as error:
        raise DownloadError(
            f"no answer from {host} for {timeout:g} s; check the network and retry"
        ) from error


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int) -> None:
        super().__init__(f"range not satisfiable (file has {total} bytes)")
        self.total = total


def _read(
    response: http.client.HTTPResponse, size: int, host: str, timeout: float, received: int, total: int
) -> bytes:
    """One read; a stall becomes a DownloadError, a reset becomes _ConnectionDropped."""
    try:
        return response.read(size)
    except TimeoutError as error:
        raise DownloadError(
            f"no data from {host} for {timeout:g} s (after {_megabytes(received)}); run the same command "
            "again to resume"
        ) from error
    except (http.client.IncompleteRead, ConnectionError) as error:
        raise _ConnectionDropped(received, total) from error


def _stream(
    response: http.client.HTTPResponse,
    sink,
    received: int,
    total: int,
    host: str,
    timeout: float,
    on_event: EventCallback | None,
) -> None:
    """Copy the rest of the body to ``sink`` with throttled progress events."""
    start = time.perf_counter()
    start_received = received
    last_event = 0.0
    emit(on_event, ProgressEvent("download", received, total))
    while True:
        try:
            block = _read(response, _CHUNK_BYTES, host, timeout, received, total)
        finally:
            sink.flush()
        if not block:
            break
        sink.write(block)
        received += len(block)
        now = time.perf_counter()
        if now - last_event >= _EVENT_INTERVAL_SECONDS:
            last_event = now
            elapsed = now - start
            rate = (received - start_received) / elapsed if elapsed > 0 else 0.0
            eta = round((total - received) / rate, 1) if total and rate else None
            emit(on_event, ProgressEvent("download", received, total, round(elapsed, 3), eta))
    if total and received < total:
        raise _ConnectionDropped(received, total)
    emit(
        on_event,
        ProgressEvent("download", received, total or received, round(time.perf_counter() - start, 3), 0.0),
    )


def _content_length(response: http.client.HTTPResponse) -> int:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else 0


def _parse_content_range(value: str | None) -> tuple[int, int]:
    """``bytes START-END/TOTAL`` or ``bytes */TOTAL`` → (start, total); unknown parts are 0."""
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not match:
        return 0, 0
    start, total = match.groups()
    return int(start or 0), int(total) if total and total.isdigit() else 0


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
