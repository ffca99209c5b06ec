"""The lock's SBOM lists every pin; the audit fails loudly when it audited nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "sbom.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_sbom_has_one_component_per_pin(tmp_path):
    out = tmp_path / "sbom.json"
    done = _run("sbom", "--out", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    pins = [line.split("==")[0].strip().lower() for line in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line]
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"
    assert len(doc["components"]) == len(pins)
    names = {c["name"] for c in doc["components"]}
    assert {"prefect", "mlflow", "bentoml", "torch"} <= names
    torch = next(c for c in doc["components"] if c["name"] == "torch")
    assert torch["purl"].startswith("pkg:pypi/torch@2.13.0")


def test_an_unreachable_service_is_not_a_clean_audit():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    done = _run("audit", "--osv-url", f"http://127.0.0.1:{port}", "--timeout", "3")
    assert done.returncode == 3
    assert "audited 0 of" in done.stderr and "NOT a clean audit" in done.stderr
    assert "no known vulnerabilities" not in done.stdout


class _FakeOSV(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        queries = json.loads(self.rfile.read(int(self.headers["content-length"])))["queries"]
        results = [{"vulns": [{"id": "GHSA-test-0001"}]} if q["package"]["name"] == "pyyaml" else {} for q in queries]
        body = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_reported_vulnerability_fails_the_audit_and_names_the_package():
    server = HTTPServer(("127.0.0.1", 0), _FakeOSV)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = _run("audit", "--osv-url", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert done.returncode == 1, done.stderr
    assert "pyyaml==" in done.stdout and "GHSA-test-0001" in done.stdout
    assert "1 with known vulnerabilities" in done.stdout
