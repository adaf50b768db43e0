"""CI tokens: their secrets, how they are stored, when they expire. Pure except ``now``.

A token is a robot credential used as the password of HTTP Basic with the token's name as the user
name, so every client that logs in with a password works unchanged. Its secret is 192 random bits,
printed once. The store keeps only ``hmac-sha256$<key>$<mac>``: a keyed hash with a random key per
token. A secret that random cannot be guessed from a fast hash, so tokens never pay bcrypt (which
exists to slow down guessing low-entropy passwords): a token-authenticated request costs
microseconds, no cache needed.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets

SECRET_PREFIX = "mreg_"  # lets secret scanners and humans recognise a leaked token
SECRET_BYTES = 24  # 192 bits
_KEY_BYTES = 16
HASH_SCHEME = "hmac-sha256"
_STORED = re.compile(rf"{HASH_SCHEME}\$[0-9a-f]{{{2 * _KEY_BYTES}}}\$[0-9a-f]{{64}}")
_DURATION = re.compile(r"([1-9][0-9]{0,5})([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}  # m: minutes (months are 30d)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    key = secrets.token_bytes(_KEY_BYTES)
    return f"{HASH_SCHEME}${key.hex()}${_mac(key, secret).hex()}"


def _mac(key: bytes, secret: str) -> bytes:
    # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than hmac.new(...).digest()
    return hmac.digest(key, secret.encode("utf-8"), hashlib.sha256)


def is_secret_hash(value: object) -> bool:
    return isinstance(value, str) and _STORED.fullmatch(value) is not None


def secret_matches(secret: str, stored: str) -> bool:
    """Constant-time comparison of ``secret`` with a stored ``hash_secret`` value."""
    _scheme, key_hex, mac_hex = stored.split("$")
    return hmac.compare_digest(_mac(bytes.fromhex(key_hex), secret), bytes.fromhex(mac_hex))


def parse_duration(text: str) -> datetime.timedelta:
    """``30m``, ``12h``, ``90d``, ``4w`` -> a timedelta; ValueError for anything else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a duration like 30m, 12h, 90d or 4w, not {text!r}")
    return datetime.timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def utc_text(moment: datetime.datetime) -> str:
    """The one way timestamps are written: ISO 8601, UTC, whole seconds, ``Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(value: object) -> datetime.datetime:
    """A timestamp as written by ``utc_text`` (or as YAML reads an unquoted one); ValueError else."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)
