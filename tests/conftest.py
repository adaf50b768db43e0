import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

# tests/helpers.py is imported as a plain module by every layer
sys.path.insert(0, str(Path(__file__).parent))

from cli_helpers import SRC, WAIT_TIMEOUT, AuthFiles, Cli, Proxy, echo_registry  # noqa: E402
from helpers import TEST_COST, free_port  # noqa: E402

from mreg_proxy.app import serve  # noqa: E402
from mreg_proxy.config import Settings  # noqa: E402

# Fixtures of the CLI and live-TLS tests at this level (tests/test_*.py). tests/unit has its own
# ``proxy``, which takes precedence there.


@pytest.fixture
def auth_files(tmp_path: Path) -> AuthFiles:
    folder = tmp_path / "auth"
    folder.mkdir()
    return AuthFiles(folder / "users.yml", folder / "tls.crt", folder / "tls.key")


@pytest.fixture
def cli(auth_files: AuthFiles, tmp_path: Path) -> Cli:
    """The CLIs of this tree, with the test's auth folder and the cheapest bcrypt cost."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(SRC),
        MREG_USERS_FILE=str(auth_files.users),
        MREG_TLS_CERT=str(auth_files.cert),
        MREG_TLS_KEY=str(auth_files.key),
        MREG_BCRYPT_COST=str(TEST_COST),
    )
    return Cli(env, tmp_path)


@pytest.fixture
async def echo_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> URL:
    server = await aiohttp_server(echo_registry(), host="127.0.0.1")
    return URL(f"http://127.0.0.1:{server.port}")


@pytest.fixture
async def proxy(auth_files: AuthFiles, echo_upstream: URL) -> AsyncIterator[Proxy]:
    """The real proxy (``serve``) on 127.0.0.1, polling the TLS files every 0.1 s."""
    port = free_port()
    settings = Settings(
        listen_host="127.0.0.1",
        listen_port=port,
        upstream=echo_upstream,
        users_file=auth_files.users,
        tls_cert=auth_files.cert,
        tls_key=auth_files.key,
        bcrypt_cost=TEST_COST,
        tls_poll_interval=0.1,
    )
    started = asyncio.Event()
    task = asyncio.create_task(serve(settings, started))
    try:
        await asyncio.wait_for(started.wait(), WAIT_TIMEOUT)
        yield Proxy(port, settings)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
