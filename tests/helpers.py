"""Helpers shared by every test layer (no pytest fixtures here)."""

from __future__ import annotations

import base64
import os
import shutil
import socket
from pathlib import Path

import bcrypt
import pytest

from mreg_proxy.auth.users import User, write_users_file

TEST_COST = 4  # bcrypt's minimum: tests check behaviour, not hashing cost


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_user(name: str, password: str, role: str = "reader") -> User:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(TEST_COST)).decode()
    return User(name, role, hashed)


def write_users(path: Path, *users: User) -> None:
    write_users_file(path, {u.name: u for u in users})


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def require_tool(*names: str) -> str:
    """Path of the first tool found; skip (or, under CI=true, fail) when none is installed."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{' or '.join(names)} not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI must install it (.ci/run)")
    pytest.skip(message)
