"""A real Herald gateway for the client's tests: `herald standalone` of this checkout (built
with cargo when missing), on a free port, with an API key and an HMAC secret for tokens."""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "python-client-test-key"
SECRET = "python-client-test-secret-32-bytes"


def herald_binary() -> Path:
    binary = Path(os.environ.get("TEST_HERALD_BINARY", ROOT / "target" / "debug" / "herald"))
    if not binary.exists():
        subprocess.run(["cargo", "build", "--bin", "herald"], cwd=ROOT, check=True)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gateway():
    """The gateway's base URL."""
    port = free_port()
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(
        f'api_keys = ["{API_KEY}"]\nauth = "optional"\nauth_hmac_secret = "{SECRET}"\n'
        "[namespaces.feed]\nhistory_size = 100\n"
    )
    config.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    process = subprocess.Popen(
        [herald_binary(), "standalone", "--config", config.name, "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("herald did not start")
        yield url
    finally:
        process.kill()
        process.wait()
        os.unlink(config.name)


def history(url: str, group: str) -> list:
    """The data of every retained message of `group`."""
    response = httpx.get(f"{url}/api/history", params={"group": group}, headers={"Authorization": f"Bearer {API_KEY}"})
    response.raise_for_status()
    return [m["data"] for m in response.json()["messages"]]
