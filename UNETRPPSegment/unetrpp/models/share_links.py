"""Sharing links and web pages: turning a "share" URL into a download, and recognising HTML.

Google Drive and SharePoint hand out links to a viewer page, not to the file. Google Drive also answers
large downloads with a "can't scan this file for viruses" page whose form leads to the file, and with a
quota page when too many people downloaded it recently. These pure functions know those pages;
``download.py`` uses them.
"""

from __future__ import annotations

import html.parser
import re
import urllib.parse

from unetrpp.errors import DownloadError

__all__ = ["direct_download_url", "looks_like_html", "drive_confirmation_url"]

_DRIVE_FILE_ID = re.compile(r"^/file/d/([A-Za-z0-9_-]+)")
# Where Google Drive's "download anyway" form may lead.
_DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")


def direct_download_url(url: str) -> str:
    """The URL that serves the file itself rather than a viewer page.

    - Google Drive ``https://drive.google.com/file/d/ID[/view]`` →
      ``https://drive.usercontent.google.com/download?id=ID&export=download&confirm=t``
      (``confirm=t`` skips the "file too large to scan for viruses" page).
    - SharePoint / OneDrive sharing links (``https://x.sharepoint.com/:u:/g/...``) get ``download=1``.
    - Anything else is returned unchanged.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host == "drive.google.com":
        match = _DRIVE_FILE_ID.match(parts.path)
        query = urllib.parse.parse_qs(parts.query)
        file_id = match.group(1) if match else (query.get("id") or [None])[0]
        if file_id:
            return "https://drive.usercontent.google.com/download?" + urllib.parse.urlencode(
                {"id": file_id, "export": "download", "confirm": "t"}
            )
    if host.endswith(".sharepoint.com"):
        query = [
            (k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "download"
        ]
        query.append(("download", "1"))
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return url


def looks_like_html(first_bytes: bytes, content_type: str | None = None) -> bool:
    """True for a web page: a ``text/html`` content type or a body starting like an HTML document."""
    if content_type and content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    head = first_bytes.lstrip()[:64].lower()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body"))


class _FormParser(html.parser.HTMLParser):
    """Collects the action and input values of Google Drive's ``download-form``."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "form" and values.get("id") == "download-form":
            self._inside = True
            self.action = values.get("action", "")
        elif tag == "input" and self._inside and values.get("name"):
            self.fields.append((values["name"], values.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def drive_confirmation_url(page: bytes, page_url: str) -> str | None:
    """The URL behind Google Drive's "download anyway" form, or None if the page has no such form.

    The form is followed only to an https address of Google Drive, or back to the page's own origin
    (scheme, host and port): a page from a hostile or intercepted host must not make the client read
    local files (``file:``) or reach other machines.

    Raises:
        DownloadError: the form leads anywhere else.
    """
    parser = _FormParser()
    parser.feed(page.decode("utf-8", errors="replace"))
    if parser.action is None:
        return None
    action = urllib.parse.urljoin(page_url, parser.action)
    target, page = urllib.parse.urlsplit(action), urllib.parse.urlsplit(page_url)
    same_origin = (target.scheme, target.netloc) == (page.scheme, page.netloc)
    if not same_origin and not (target.scheme == "https" and target.hostname in _DRIVE_HOSTS):
        raise DownloadError(
            f"the download page of {page.hostname} leads to {action[:200]}, which is neither Google Drive "
            "over https nor the same site; refused (download the file in a browser instead)"
        )
    return action + ("&" if "?" in action else "?") + urllib.parse.urlencode(parser.fields)
