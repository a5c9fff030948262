"""``pvae-model serve``: a local page to try a trained model: draw a digit and hear it spoken,
upload (or record) a spoken digit and see it written, with a control for the style.

A small page of our own (``serve_page.html``) on Python's standard HTTP server rather than Gradio:
no extra dependency (Gradio brings ~100 MB and a web of packages into a toolkit whose users
install it for data and training), nothing fetched from the internet, and a page the test suite
drives in headless Chromium.  It listens on 127.0.0.1 unless told otherwise.

Routes: ``GET /`` the page, ``GET /api/info`` what is loaded, ``POST /api/speech_to_image``
(a sound file -> PNG), ``POST /api/image_to_speech`` (a picture -> WAV); ``?style=prior|seed:N|voice:NAME``
(none: each direction's default, :mod:`pvae_model.generate`).
Bad input is a 400 with ``{"error": "..."}``; bodies over ``MAX_BODY`` bytes are refused.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from .frontend import InputError

MAX_BODY = 10 << 20  # a spoken digit or a drawing is far smaller
PAGE = Path(__file__).with_name("serve_page.html")


def _style(query: str):
    from .generate import parse_style

    text = (parse_qs(query).get("style") or [None])[0]
    if text is not None and text != "prior" and text != "voice" and not text.startswith(("seed:", "voice:")):
        raise InputError("style must be prior, seed:N, voice or voice:NAME")  # never a file on the server
    return parse_style(text)


def make_handler(model, selftest_wav: Path | None = None, lock: threading.Lock | None = None):
    """The request handler class for ``model`` (a :class:`pvae_model.generate.CrossModal`)."""
    lock = lock or threading.Lock()  # one generation at a time: torch is not re-entrant per model

    class Handler(BaseHTTPRequestHandler):
        server_version = "pvae-serve"

        def log_message(self, fmt, *args):  # quiet: the terminal shows only what failed
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, msg: str) -> None:
            self._send(code, json.dumps({"error": msg}).encode(), "application/json")

        def do_GET(self):  # noqa: N802
            path = urlparse(self.path).path
            if path == "/":
                self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif path == "/api/info":
                info = model.info or {}
                desc = (f"{model.kind} from {Path(model.source).name}, epoch {info.get('epoch')}; speakers in "
                        f"training: {', '.join((info.get('speakers') or {}).get('train') or []) or 'not recorded'}"
                        + (f"; speaks in {model.default_voice}'s voice unless told" if model.voices else ""))
                self._send(200, json.dumps({"description": desc, "voices": list(model.voices)}).encode(),
                           "application/json")
            elif path == "/selftest.wav" and selftest_wav is not None:
                self._send(200, Path(selftest_wav).read_bytes(), "audio/wav")
            else:
                self._error(404, "no such page")

        def do_POST(self):  # noqa: N802
            url = urlparse(self.path)
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = -1
            if not 0 < n <= MAX_BODY:
                return self._error(413 if n > MAX_BODY else 400, f"expected a body of 1 to {MAX_BODY} bytes")
            body = self.rfile.read(n)
            try:
                style = _style(url.query)
                with lock:
                    if url.path == "/api/speech_to_image":
                        out, ctype = _speech_to_png(model, body, style), "image/png"
                    elif url.path == "/api/image_to_speech":
                        out, ctype = _picture_to_wav(model, body, style), "audio/wav"
                    else:
                        return self._error(404, "no such endpoint")
            except InputError as e:
                return self._error(400, str(e))
            self._send(200, out, ctype)

    return Handler


def _speech_to_png(model, body: bytes, style) -> bytes:
    import soundfile as sf
    from PIL import Image

    try:
        wave, rate = sf.read(io.BytesIO(body), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise InputError(f"the recording: not a sound file libsndfile reads ({str(e).splitlines()[0][:80]})") from None
    img = model.speech_to_image(wave, rate, style=style)
    buf = io.BytesIO()
    Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _picture_to_wav(model, body: bytes, style) -> bytes:
    import soundfile as sf

    from .frontend import read_image

    picture, _ = read_image(io.BytesIO(body), "the picture")  # the same reader as generate's
    wave, rate = model.image_to_speech(picture, style=style)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def serve(model, host: str = "127.0.0.1", port: int = 8000, selftest_wav: Path | None = None) -> ThreadingHTTPServer:
    """A server for ``model`` bound to (host, port) (port 0: any free one); call ``serve_forever``."""
    return ThreadingHTTPServer((host, port), make_handler(model, selftest_wav))
