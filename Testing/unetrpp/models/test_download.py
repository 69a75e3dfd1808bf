"""HTTP transfer against a real server on 127.0.0.1: resume, stalls, web pages, Drive form, proxies."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import time
import urllib.request

import pytest
from loopback_http import LoopbackServer, Route
from unetrpp.errors import DownloadError
from unetrpp.events import ProgressEvent, StageEvent
from unetrpp.models.download import build_opener, fetch
from unetrpp.models.share_links import direct_download_url, drive_confirmation_url, looks_like_html

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxies_from_the_machine(monkeypatch):
    """Tests talk to 127.0.0.1 directly unless a test sets a proxy itself."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def server():
    with LoopbackServer() as running:
        yield running


@pytest.fixture(scope="module")
def payload() -> bytes:
    """3 MB of incompressible bytes: several 1 MiB chunks, so progress and resume have something to do."""
    return random.Random(7).randbytes(3_000_000)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_full_download_writes_verified_file_and_reports_byte_progress(server, payload, tmp_path):
    url = server.add("/w.model", Route(body=payload))
    events = []
    result = fetch(url, tmp_path / "w.model", expected_sha256=_sha(payload), on_event=events.append)

    assert (tmp_path / "w.model").read_bytes() == payload
    assert result.sha256 == _sha(payload) and result.size_bytes == len(payload)
    assert not (tmp_path / "w.model.part").exists()
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert all(e.stage == "download" and e.total == len(payload) for e in progress)
    assert progress[-1].done == len(payload)
    assert [e.done for e in progress] == sorted(e.done for e in progress)
    assert any(isinstance(e, StageEvent) and "127.0.0.1" in e.message for e in events)


def test_dropped_connection_keeps_part_and_next_call_resumes_with_range(server, payload, tmp_path):
    url = server.add("/w.model", Route(body=payload, cut_after=1_200_000, cut_times=1))
    target = tmp_path / "w.model"

    with pytest.raises(DownloadError, match="dropped after 1.2 MB of 3.0 MB; run the same command again"):
        fetch(url, target, expected_sha256=_sha(payload))
    assert (tmp_path / "w.model.part").stat().st_size == 1_200_000
    assert not target.exists()

    result = fetch(url, target, expected_sha256=_sha(payload))
    assert server.requests_for("/w.model")[-1].headers.get("Range") == "bytes=1200000-"
    assert result.resumed_from_bytes == 1_200_000
    assert target.read_bytes() == payload


def test_retries_resume_within_one_call(server, payload, tmp_path):
    url = server.add("/w.model", Route(body=payload, cut_after=500_000, cut_times=2))
    result = fetch(url, tmp_path / "w.model", retries=2)
    assert result.sha256 == _sha(payload)
    assert [r.headers.get("Range") for r in server.requests_for("/w.model")] == [
        None,
        "bytes=500000-",
        "bytes=1000000-",
    ]


def _interrupted(folder, data: bytes, validator: str) -> None:
    """What a dropped download leaves: the first bytes and the validator of the first response."""
    (folder / "w.model.part").write_bytes(data)
    (folder / "w.model.part.json").write_text(json.dumps({"if_range": validator}))


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    url = server.add("/w.model", Route(body=payload, kind="ignore_range"))
    _interrupted(tmp_path, b"stale bytes from another file", '"v1"')
    result = fetch(url, tmp_path / "w.model")
    assert server.requests_for("/w.model")[0].headers.get("Range") == "bytes=29-"
    assert result.resumed_from_bytes == 0
    assert (tmp_path / "w.model").read_bytes() == payload


def test_complete_part_file_is_finished_without_downloading_again(server, payload, tmp_path):
    route = Route(body=payload)
    url = server.add("/w.model", route)
    _interrupted(tmp_path, payload, route.etag)  # crashed after the last byte, before the rename
    result = fetch(url, tmp_path / "w.model", expected_sha256=_sha(payload))
    assert result.resumed_from_bytes == len(payload)
    assert (tmp_path / "w.model").read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.model"]


def _drop_then_replace(server, tmp_path, payload: bytes, **route_options) -> tuple[Route, bytes, str]:
    """Version A of the file drops at 40 %; then the server holds version B (a new upload)."""
    route = Route(body=payload, cut_after=len(payload) * 4 // 10, cut_times=1, **route_options)
    url = server.add("/w.model", route)
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch(url, tmp_path / "w.model")
    replaced = random.Random(8).randbytes(len(payload))
    route.body = replaced
    return route, replaced, url


def test_resume_after_the_file_changed_on_the_server_restarts_from_zero(server, payload, tmp_path):
    first_etag = Route(body=payload).etag
    route, replaced, url = _drop_then_replace(server, tmp_path, payload)
    result = fetch(url, tmp_path / "w.model")

    resume = server.requests_for("/w.model")[-1].headers
    assert resume.get("Range") == f"bytes={len(payload) * 4 // 10}-" and resume.get("If-Range") == first_etag
    assert result.resumed_from_bytes == 0 and result.sha256 == _sha(replaced)
    assert (tmp_path / "w.model").read_bytes() == replaced  # never A's head glued to B's tail
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.model"]


def test_a_server_that_ignores_if_range_is_caught_by_the_changed_etag(server, payload, tmp_path):
    _route, replaced, url = _drop_then_replace(server, tmp_path, payload, honour_if_range=False)
    result = fetch(url, tmp_path / "w.model")
    assert [r.headers.get("Range") for r in server.requests_for("/w.model")][1:] == [
        f"bytes={len(payload) * 4 // 10}-",
        None,
    ]
    assert result.sha256 == _sha(replaced)


def test_without_a_validator_nothing_is_resumed(server, payload, tmp_path):
    _route, replaced, url = _drop_then_replace(server, tmp_path, payload, validators=False)
    result = fetch(url, tmp_path / "w.model")
    assert server.requests_for("/w.model")[-1].headers.get("Range") is None
    assert result.resumed_from_bytes == 0 and result.sha256 == _sha(replaced)


def test_wrong_checksum_is_rejected_and_nothing_is_left(server, payload, tmp_path):
    url = server.add("/w.model", Route(body=payload))
    with pytest.raises(DownloadError, match="not the published one"):
        fetch(url, tmp_path / "w.model", expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_404_names_the_host_and_status(server, tmp_path):
    url = server.add("/gone.model", Route(kind="status", status=404))
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1 answered 404 Not Found"):
        fetch(url, tmp_path / "w.model")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["html", "disguised_html"], ids=["text-html", "html-body-as-octet-stream"])
def test_web_page_instead_of_file_is_refused_with_drive_hint(server, tmp_path, kind):
    page = b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"
    url = server.add("/w.model", Route(body=page, kind=kind))
    with pytest.raises(
        DownloadError, match="web page instead of the weights file.*Google Drive.*models import"
    ):
        fetch(url, tmp_path / "w.model")
    assert list(tmp_path.iterdir()) == []


def test_stalling_server_times_out_with_clear_message(server, payload, tmp_path):
    url = server.add("/w.model", Route(body=payload, kind="stall", cut_after=100_000))
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"no data from 127\.0\.0\.1 for 0\.5 s"):
        fetch(url, tmp_path / "w.model", timeout=0.5)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "w.model").exists()


def test_drive_confirmation_form_is_followed(server, payload, tmp_path):
    real = server.add("/download", Route(body=payload))
    page_url = server.add("/uc", Route(kind="drive", form_target=real))
    result = fetch(page_url + "?id=abc123", tmp_path / "w.model")
    assert result.sha256 == _sha(payload)
    confirmed = server.requests_for("/download")[0].path
    assert "confirm=t" in confirmed and "uuid=0f1e2d3c" in confirmed and "id=abc123" in confirmed


@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/download",
        "file:///etc/passwd",
        "https://evil.example/download",
        "http://drive.google.com/x",
    ],
    ids=["other-host-same-port", "local-file", "foreign-https-host", "drive-without-https"],
)
def test_drive_confirmation_form_is_followed_only_to_drive_or_the_same_site(
    server, payload, tmp_path, target
):
    server.add("/download", Route(body=payload))
    page_url = server.add("/uc", Route(kind="drive", form_target=target.format(port=server.port)))
    with pytest.raises(DownloadError, match="neither Google Drive over https nor the same site; refused"):
        fetch(page_url + "?id=abc123", tmp_path / "w.model")
    assert server.requests_for("/download") == [] and list(tmp_path.iterdir()) == []


def test_drive_confirmation_form_may_lead_to_google_drive_over_https():
    page = b'<html><form id="download-form" action="https://drive.usercontent.google.com/download">'
    page += b'<input type="hidden" name="id" value="x1"></form></html>'
    url = drive_confirmation_url(page, "https://drive.google.com/uc?id=x1")
    assert url == "https://drive.usercontent.google.com/download?id=x1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://drive.google.com/file/d/13JuLMeDQRR_a3c3tr2V2oav6I29fJoBa",
            "https://drive.usercontent.google.com/download?id=13JuLMeDQRR_a3c3tr2V2oav6I29fJoBa"
            "&export=download&confirm=t",
        ),
        (
            "https://drive.google.com/file/d/abc_-1/view?usp=sharing",
            "https://drive.usercontent.google.com/download?id=abc_-1&export=download&confirm=t",
        ),
        (
            "https://x-my.sharepoint.com/:u:/g/personal/a_b/ETAlc8W?e=KfzAiG",
            "https://x-my.sharepoint.com/:u:/g/personal/a_b/ETAlc8W?e=KfzAiG&download=1",
        ),
        ("https://example.org/weights.model", "https://example.org/weights.model"),
    ],
    ids=["drive-file", "drive-view-link", "sharepoint", "plain"],
)
def test_direct_download_url(url, expected):
    assert direct_download_url(url) == expected


def test_html_detection_by_content_type_or_body():
    assert looks_like_html(b"PK\x03\x04", "text/html; charset=utf-8")
    assert looks_like_html(b"\n  <!doctype html><html>", "application/octet-stream")
    assert not looks_like_html(b"PK\x03\x04archive", "application/octet-stream")


def test_proxy_from_environment_is_used(server, payload, tmp_path, monkeypatch):
    proxy = f"http://127.0.0.1:{server.port}"
    monkeypatch.setenv("http_proxy", proxy)
    handlers = [h for h in build_opener().handlers if isinstance(h, urllib.request.ProxyHandler)]
    assert handlers and handlers[0].proxies.get("http") == proxy
    # The loopback server acts as the proxy: the .invalid host is never resolved or contacted.
    server.add("/w.model", Route(body=payload))
    result = fetch("http://weights.example.invalid/w.model", tmp_path / "w.model")
    assert result.sha256 == _sha(payload)
    assert server.requests[0].path == "http://weights.example.invalid/w.model"


def test_no_proxy_from_environment_is_honoured(server, payload, tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    url = server.add("/w.model", Route(body=payload))
    assert fetch(url, tmp_path / "w.model").sha256 == _sha(payload)


def test_other_http_errors_name_status_and_reason(server, tmp_path):
    url = server.add("/private.model", Route(kind="status", status=403))
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1 answered 403 Forbidden"):
        fetch(url, tmp_path / "w.model")


def test_unreachable_host_mentions_network_and_proxy(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1 .*HTTPS_PROXY"):
        fetch(f"http://127.0.0.1:{port}/w.model", tmp_path / "w.model", timeout=2)
