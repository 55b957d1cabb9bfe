"""``agentwatch postmortem``: seed 003's six sections and checklist, filled from the trace; the HTML page
rendered in a real headless browser (one mark per step, nothing fetched, hostile strings inert)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import threading
import zlib
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentwatch.cli import main

SECTIONS = [
    "1. Session context", "2. Failure classification", "3. Fault origin and cascade path",
    "4. Impact assessment", "5. Root cause", "6. Detection gap",
]  # fmt: skip
CHECKLIST = [
    "Session trace exported and stored before log rotation",
    "Fault origin identified by step number",
    "Failure mode classified",
    "Full cascade path documented from fault origin to final output",
    "All external actions after fault origin enumerated",
    "Reversible vs. irreversible actions identified and remediated",
    "Root cause documented with one clear category",
    "Detection gap described",
    "New eval test added to regression suite for this failure case",
    "Alert configured for the failure signature",
    "Postmortem distributed to platform, product, and on-call teams within 48 hours",
]
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


def _markdown(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["postmortem", str(path)]) == 0
    return capsys.readouterr().out


def test_markdown_has_the_six_sections_in_order_and_the_checklist(
    incident_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _markdown(incident_file, capsys)
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[:6] == SECTIONS
    checklist = re.findall(r"^- \[([ x])\] (.+)$", text, flags=re.M)
    assert len(checklist) == len(CHECKLIST)
    for (_, item), expected in zip(checklist, CHECKLIST, strict=True):
        assert item.replace("\\", "").startswith(expected)
    done = {item.split(" (")[0] for mark, item in checklist if mark == "x"}
    assert "Fault origin identified by step number" in done
    assert "New eval test added to regression suite for this failure case" not in done


def test_markdown_is_filled_from_the_trace(incident_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _markdown(incident_file, capsys).replace("\\", "")
    context = text.split("## 2.")[0]
    assert "7 steps: 4 LLM calls, 3 tool calls" in context and "Subject:** customer cust_789" in context
    assert re.search(r"Time range:\*\* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC to ", context)
    assert "First user message:** Please confirm my latest order." in context
    assert "Failure class:** hallucination_propagation" in text
    assert "Fault origin:** step 3, chat gpt-4o-mini" in text
    assert "introduced here: order:ord_555" in text
    assert "| 6 | orders.confirm | ok | NO | absent |" in text
    # detection gap: stop_on [high] would have stopped the run before the confirmation was sent
    assert "| anomaly.stop_on: [high] | stops the call after step 3, chat gpt-4o-mini | step 6 orders.confirm |" in text
    assert "stop_on: [ENTITY_HALLUCINATION, critical]" in text


def test_without_content_the_draft_says_what_was_not_captured(
    no_content_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _markdown(no_content_file, capsys)
    assert "not captured (content capture was off)" in text
    assert "Fault origin:** step 3" in text


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "article", "section", "h1", "h2", "p", "dl", "dt", "dd",
    "table", "thead", "tbody", "tr", "th", "td", "pre", "code", "ul", "li", "svg", "text", "rect", "g", "line",
}  # fmt: skip


def _tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def _hostile(incident_file: Path, tmp_path: Path, canary: str) -> Path:
    """The incident with attacker-controlled strings in span names and a tool name."""
    spans: list[dict[str, Any]] = []
    for line in incident_file.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                spans.extend(ss["spans"])
    payload = (f'<img src="{canary}/img"><script>fetch("{canary}/js")</script>'
               f'<link rel="stylesheet" href="{canary}/css"> {SECRET} ](javascript:alert(1)) | `x`')  # fmt: skip
    for span in spans:
        if span["name"] == "execute_tool orders.confirm":
            span["name"] += payload
            for attr in span["attributes"]:
                if attr["key"] == "gen_ai.tool.name":
                    attr["value"] = {"stringValue": "orders.confirm" + payload}
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
    return path


def test_hostile_strings_are_escaped_and_secrets_redacted(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _hostile(incident_file, tmp_path, "http://127.0.0.1:9")
    md = _markdown(path, capsys)
    assert SECRET not in md
    assert not re.search(r"(?<!\\)<(img|script|link)", md)  # every < is escaped as \<
    out = tmp_path / "pm.html"
    assert main(["postmortem", str(path), "--format", "html", "-o", str(out)]) == 0
    page = out.read_text()
    assert SECRET not in page
    tags = _tags(page)
    assert {t for t, _ in tags} <= ALLOWED_TAGS
    assert not [a for _, attrs in tags for a, _ in attrs if a in ("src", "href", "srcset", "action", "style")]
    assert "url(" not in page.split("</style>")[0] and "@import" not in page
    assert "default-src 'none'" in page


# --------------------------------------------------------------------------- real browser


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("no chromium under CI=true (scripts/dev.py test installs it)")
    pytest.skip("no headless chromium here (apt-get install chromium); CI installs it")


def _run_browser(browser: str, page: Path, *args: str) -> str:
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={page.parent / 'profile'}", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what chromium writes) into rows of raw pixels."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def test_html_renders_in_a_headless_browser_offline(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = _browser()
    hits: list[str] = []

    class Canary(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Canary)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        source = _hostile(incident_file, tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}")
        page = tmp_path / "postmortem.html"
        assert main(["postmortem", str(source), "--format", "html", "-o", str(page)]) == 0
        capsys.readouterr()
        dom = _run_browser(browser, page, "--virtual-time-budget=2000", "--dump-dom")
        shot = tmp_path / "shot.png"
        _run_browser(browser, page, "--window-size=1100,2400", f"--screenshot={shot}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert hits == []  # nothing was fetched, not even from the hostile strings
    marks = re.findall(r'<rect class="mark ([^"]*)" data-step="(\d+)"', dom)
    assert [int(step) for _, step in marks] == [1, 2, 3, 4, 5, 6, 7]  # one mark per step
    assert [step for cls, step in marks if "origin" in cls.split()] == ["3"]
    assert [step for cls, step in marks if "blast" in cls.split()] == ["6"]
    assert "<img" not in dom and "<script" not in dom and "<link" not in dom
    assert SECRET not in dom
    # the timeline is drawn: the fault origin's red mark is on screen
    width, bpp, rows = _pixels(shot.read_bytes())
    red = sum(
        1 for row in rows for x in range(0, width * bpp, bpp)
        if abs(row[x] - 0xD2) < 8 and abs(row[x + 1] - 0x3C) < 8 and abs(row[x + 2] - 0x3C) < 8
    )  # fmt: skip
    assert red > 20
