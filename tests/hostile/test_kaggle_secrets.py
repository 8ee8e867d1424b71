"""The Kaggle key never leaks, tested with the real ``kaggle`` client and a hostile server.

A fake Kaggle API runs on 127.0.0.1 in the test and fails in every way we could
think of — 401, 403, 404, 500, a stalled connection, bad JSON, a redirect, an
archive that is really an echo of the request — and every answer quotes the
key, the ``Authorization`` header (base64 of ``user:key``) or a case-changed key.
Then everything is grepped for every spelling of the key: the raised error, its
chain and the text of its traceback (as Python's default hook prints it), the
reprs of the locals in its frames, standard output and error at the file
descriptor, every log record, every warning, and every file under the test's
folder but the credentials file itself.

How the client finds its server: ``KaggleApi`` builds its ``KaggleClient`` with
``env=KaggleEnv.PROD`` unless its command-line arguments say ``--local`` /
``--staging`` / ``--admin`` (``KAGGLE_API_ENVIRONMENT`` is only read when no env
is passed, which ``KaggleApi`` never does), and the endpoint comes from
``kagglesdk.kaggle_env._env_to_endpoint``. There is no endpoint setting, so the
test points that table's PROD entry at the fake server; every other line of the
client runs as shipped.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import urllib.parse
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visualsim.datasets import download_kaggle_dataset
from visualsim.datasets.kaggle import MARKER_NAME, redact
from visualsim.errors import DatasetError

USER = "alice-h2"
KEY = "f00dfeedC0ffee1234567890abcdef42"
BASIC = base64.b64encode(f"{USER}:{KEY}".encode()).decode()


def spellings(key: str = KEY) -> list[str]:
    """Every form of the key that must not appear anywhere."""
    forms = {
        key,
        key.upper(),
        key.lower(),
        key.swapcase(),
        urllib.parse.quote(key),
        base64.b64encode(key.encode()).decode(),
        base64.b64encode(f"{USER}:{key}".encode()).decode(),
        base64.urlsafe_b64encode(f"{USER}:{key}".encode()).decode().rstrip("="),
        base64.b64encode(f"{USER}:{key}".upper().encode()).decode(),
    }
    return sorted(forms)


def leaks(text: str) -> list[str]:
    return [form for form in spellings() if form in text]


def _zip_of_images() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            image = io.BytesIO()
            Image.new("RGB", (8, 8), colour).save(image, "PNG")
            archive.writestr(f"{name}/{name}.png", image.getvalue())
    return out.getvalue()


ZIP = _zip_of_images()


class FakeKaggle(http.server.BaseHTTPRequestHandler):
    """Answers DownloadDataset according to the dataset slug, quoting the credentials."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: bytes, kind: str = "application/json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # the redirect target
        auth = self.headers.get("Authorization", "")
        self._send(500, f"<h1>500</h1><pre>{self.path} {auth}</pre>".encode(), "text/html")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        scenario = request.get("datasetSlug", "")
        auth = self.headers.get("Authorization", "")
        raw_headers = str(self.headers)
        key = base64.b64decode(auth.split()[-1]).decode().split(":", 1)[-1] if auth else ""
        echo = json.dumps({"code": 0, "message": f"bad key {key} in {auth}"})
        if scenario == "unauthorised":
            self._send(401, json.dumps({"code": 401, "message": f"key {key} is wrong"}).encode())
        elif scenario == "forbidden":
            self._send(403, json.dumps({"code": 403, "message": f"{auth} may not"}).encode())
        elif scenario == "missing":
            self._send(404, f"no dataset for {raw_headers}".encode(), "text/plain")
        elif scenario == "server-error":
            self._send(500, f"<pre>Traceback: key={key.upper()}</pre>".encode(), "text/html")
        elif scenario == "bad-json":
            self._send(200, f"{{'not json': {echo} {auth}".encode())
        elif scenario == "echo-archive":
            self._send(200, raw_headers.encode() + echo.encode(), "application/zip")
        elif scenario == "redirect":
            self._send(302, b"", "text/plain", Location=f"/files?token={urllib.parse.quote(key)}")
        elif scenario == "stall":
            time.sleep(1.0)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)  # no answer at all: like a timeout at a proxy
        elif scenario == "gateway-timeout":
            self._send(504, f"upstream timed out for {auth}".encode(), "text/plain")
        elif scenario == "ok":
            self._send(200, ZIP, "application/zip")
        else:
            self._send(400, echo.encode())


@pytest.fixture
def fake_kaggle() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeKaggle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    credentials = home / ".kaggle" / "kaggle.json"
    credentials.write_text(json.dumps({"username": USER, "key": KEY}))
    credentials.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


SCENARIOS = [
    "unauthorised",
    "forbidden",
    "missing",
    "server-error",
    "bad-json",
    "echo-archive",
    "redirect",
    "stall",
    "gateway-timeout",
    "refused",
    "unknown",
]

CHILD = textwrap.dedent(
    """
    import json, logging, os, sys, traceback, warnings
    sys.argv = ["download", "--verbose"]  # the client prints every request, headers and all
    logging.basicConfig(level=logging.DEBUG, filename=os.environ["LOG_FILE"],
                        format="%(name)s %(levelname)s %(message)s")
    logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
    logging.captureWarnings(True)
    warnings.simplefilter("always")
    import pytest_socket  # the child, too, may reach only this machine
    pytest_socket.socket_allow_hosts(["127.0.0.1", "localhost"])
    import kagglesdk.kaggle_env as kenv
    from visualsim.datasets import download_kaggle_dataset
    from visualsim.errors import DatasetError

    endpoint, refused = os.environ["ENDPOINT"], os.environ["REFUSED"]
    report = []
    for scenario in json.loads(os.environ["SCENARIOS"]):
        kenv._env_to_endpoint[kenv.KaggleEnv.PROD] = refused if scenario == "refused" else endpoint
        root = os.path.join(os.environ["OUT"], scenario)
        try:
            download_kaggle_dataset(f"someone/{scenario}", root)
        except DatasetError as error:
            sys.__excepthook__(type(error), error, error.__traceback__)  # the default traceback
            tb, frames = error.__traceback__, []
            while tb is not None:
                frames += [repr(v) for v in tb.tb_frame.f_locals.values()]
                tb = tb.tb_next
            report.append({
                "scenario": scenario, "outcome": "refused", "message": str(error),
                "repr": repr(error), "args": repr(error.args),
                "cause": repr(error.__cause__), "context": repr(error.__context__),
                "traceback": "".join(traceback.format_exception(error)), "locals": frames,
            })
        else:
            report.append({"scenario": scenario, "outcome": "downloaded",
                           "files": sorted(os.listdir(root))})
    print(json.dumps(report))
    # and one left uncaught, for Python's own hook to print with its whole chain
    kenv._env_to_endpoint[kenv.KaggleEnv.PROD] = endpoint
    download_kaggle_dataset("someone/unauthorised", os.path.join(os.environ["OUT"], "uncaught"))
    """
)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that refuses connections for the whole test.

    The socket stays bound but never listens, so connecting is refused and no
    other process can start listening on the port meanwhile (a port closed
    right after picking it could be taken by anything the suite runs).
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _files_text(root: Path, home: Path) -> list[str]:
    texts = []
    for path in root.rglob("*"):
        if path.is_file() and path != home / ".kaggle" / "kaggle.json":
            texts.append(f"{path}: {path.read_bytes().decode('latin-1')}")
    return texts


def test_real_client_against_a_hostile_server_leaks_the_key_nowhere(
    fake_kaggle: str, refused_url: str, home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "downloads"
    env = {
        **os.environ,
        "ENDPOINT": fake_kaggle,
        "REFUSED": refused_url,
        "SCENARIOS": json.dumps([*SCENARIOS, "ok"]),
        "OUT": str(out),
        "LOG_FILE": str(tmp_path / "child.log"),
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600
    )

    report = json.loads(result.stdout.splitlines()[-1])
    by = {r["scenario"]: r for r in report}
    assert set(by) == {*SCENARIOS, "ok"}
    assert all(by[s]["outcome"] == "refused" for s in SCENARIOS), report
    assert by["ok"]["outcome"] == "downloaded" and {"red", "blue"} <= set(by["ok"]["files"])
    assert result.returncode == 1 and "DatasetError: Kaggle did not accept" in result.stderr
    assert "did not accept the credentials" in by["unauthorised"]["message"]
    assert "HTTP 403" in by["forbidden"]["message"] and "HTTP 404" in by["missing"]["message"]
    assert "HTTP 500" in by["server-error"]["message"]
    assert "cannot reach Kaggle" in by["refused"]["message"]
    assert not (out / "echo-archive" / "echo-archive.zip").exists()  # the echo was removed
    assert "quoted your credentials" in Path(env["LOG_FILE"]).read_text()
    for r in report:
        assert r.get("cause", "None") == "None" and r.get("context", "None") == "None", r
    texts = [result.stdout, result.stderr, Path(env["LOG_FILE"]).read_text()]
    texts += [json.dumps(r) for r in report]
    texts += _files_text(tmp_path, home)
    found = {form for text in texts for form in leaks(text)}
    assert not found, [t[:3000] for t in texts if leaks(t)]


def test_the_fake_server_really_quotes_the_key(fake_kaggle: str, home: Path) -> None:
    """Without visualsim in between, the client's own error carries the key."""
    import requests

    answer = requests.post(
        f"{fake_kaggle}/v1/datasets.DatasetApiService/DownloadDataset",
        json={"ownerSlug": "someone", "datasetSlug": "unauthorised"},
        auth=(USER, KEY),
        timeout=30,
    )
    assert answer.status_code == 401 and KEY in answer.text
    answer = requests.post(
        f"{fake_kaggle}/v1/datasets.DatasetApiService/DownloadDataset",
        json={"datasetSlug": "forbidden"},
        auth=(USER, KEY),
        timeout=30,
    )
    assert BASIC in answer.text


@pytest.fixture
def kaggle_at(fake_kaggle: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import kagglesdk.kaggle_env as kenv

    monkeypatch.setitem(kenv._env_to_endpoint, kenv.KaggleEnv.PROD, fake_kaggle)
    monkeypatch.setattr(sys, "argv", ["pytest", "--verbose"])
    return fake_kaggle


@pytest.mark.parametrize("scenario", ["unauthorised", "bad-json", "echo-archive", "redirect"])
def test_in_process_nothing_reaches_capfd_caplog_or_warnings(
    kaggle_at: str,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    scenario: str,
) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)  # read by the client when it authenticates
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError) as info:
            download_kaggle_dataset(f"someone/{scenario}", tmp_path / "d")
        warnings.warn(f"outside the download: {KEY}", stacklevel=1)  # the grep works
    error = info.value
    texts = ["".join(traceback.format_exception(error)), repr(error), str(error.args)]
    assert error.__cause__ is None and error.__context__ is None
    assert error.__suppress_context__
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    records = [r for r in caplog.records if "outside" not in r.getMessage()]
    texts += [r.getMessage() for r in records] + [str(r.exc_text) for r in records]
    inside = [w for w in caught if "outside the download" not in str(w.message)]
    texts += [str(w.message) for w in inside]
    texts += _files_text(tmp_path, home)

    assert [w for w in caught if KEY in str(w.message)]  # the one we made on purpose
    assert not [t for t in texts if leaks(t)], [t for t in texts if leaks(t)]


def test_a_log_record_made_during_the_download_is_scrubbed(
    home: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Any logger, any argument, an exception's traceback: scrubbed as the record is made."""

    class LoudClient:
        def authenticate(self) -> None:
            logging.getLogger("urllib3.connectionpool").debug("send: %r", f"Basic {BASIC}")
            try:
                raise ValueError(f"token {KEY.upper()}")
            except ValueError:
                logging.getLogger("kaggle").exception("auth failed")
            warnings.warn(f"insecure key {KEY}", RuntimeWarning, stacklevel=1)
            print(f"Authorization: Basic {BASIC}", file=sys.stderr)
            print(f"send: b'POST / HTTP/1.1\\r\\nAuthorization: Basic {BASIC}'")

        def dataset_download_files(  # network-free: a stand-in that writes one local file
            self, dataset: str, path: str, **kwargs: Any
        ) -> None:
            Path(path, "a.txt").write_text("fine")

    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        download_kaggle_dataset("someone/loud", tmp_path / "d", api=LoudClient())

    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # the client's output went to the log
    texts = [r.getMessage() for r in caplog.records] + [str(r.exc_text) for r in caplog.records]
    texts += [str(w.message) for w in caught]
    assert any("auth failed" in t for t in texts) and any("insecure key ***" in t for t in texts)
    assert any("ValueError: token ***" in t for t in texts)
    assert any("Authorization: Basic ***" in t for t in texts)
    assert not [t for t in texts if leaks(t)]
    assert (tmp_path / "d" / MARKER_NAME).is_file()


@pytest.mark.parametrize(
    "text",
    [
        f"key={KEY}",
        f"KEY={KEY.upper()}",
        f"Authorization: Basic {BASIC}",
        f"b'Basic {BASIC}'",
        f"token={urllib.parse.quote(KEY)}",
        f"raw64={base64.b64encode(KEY.encode()).decode()}",
        f"prefixed64={base64.b64encode(b'xy' + KEY.encode()).decode()}",
        f"bob64={base64.b64encode(f'bob:{KEY}'.encode()).decode()}",
    ],
)
def test_redact_removes_every_spelling(text: str) -> None:
    scrubbed = redact(text, [KEY], [USER])

    assert "***" in scrubbed
    assert not leaks(scrubbed)
    assert KEY[4:-4].lower() not in scrubbed.lower()
