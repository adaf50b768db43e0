"""The few S3 calls the offline tools need (list, read, stat, delete), signed with AWS SigV4.

Only the standard library, like the other CLIs: prune runs where the registry's S3 settings are
(the same ``REGISTRY_STORAGE_S3_*`` variables), without an SDK. Path-style addressing
(``ENDPOINT/BUCKET/KEY``), as the registry uses once ``regionendpoint`` is set.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import quote, urlsplit

TIMEOUT = 60.0
MAX_PAGES = 100_000  # a listing that never ends is an error, not a hang
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    """An S3 call failed; the message is one line for the operator."""


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # scheme://host[:port]
    region: str
    bucket: str
    access_key: str
    secret_key: str
    root: str = ""  # the registry's rootdirectory, without leading or trailing "/"

    @classmethod
    def from_registry_env(cls, env: Mapping[str, str]) -> S3Settings:
        """The settings the registry reads from ``REGISTRY_STORAGE_S3_*``."""
        def need(name: str) -> str:
            value = env.get(f"REGISTRY_STORAGE_S3_{name}")
            if not value:
                raise S3Error(f"REGISTRY_STORAGE_S3_{name} is not set")
            return value

        endpoint = need("REGIONENDPOINT")
        if "://" not in endpoint:
            secure = env.get("REGISTRY_STORAGE_S3_SECURE", "true").lower() != "false"
            endpoint = f"{'https' if secure else 'http'}://{endpoint}"
        return cls(endpoint.rstrip("/"), need("REGION"), need("BUCKET"), need("ACCESSKEY"), need("SECRETKEY"),
                   env.get("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "").strip("/"))


@dataclass(frozen=True)
class Listing:
    folders: list[str]  # common prefixes, each ending in "/"
    keys: list[str]


class S3Client:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        url = urlsplit(settings.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise S3Error(f"S3 endpoint {settings.endpoint!r}: expected http(s)://HOST[:PORT]")
        self._scheme, self._netloc = url.scheme, url.netloc

    def list(self, prefix: str, delimiter: str = "/") -> Listing:
        """Everything under ``prefix``: with a delimiter, one level (folders and keys)."""
        folders: list[str] = []
        keys: list[str] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = {"list-type": "2", "prefix": prefix}
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["continuation-token"] = token
            status, body = self._call("GET", "", params)
            if status != 200:
                raise S3Error(f"listing {prefix!r}: S3 answered {status}: {body[:200]!r}")
            root = ElementTree.fromstring(body)
            folders += [e.text or "" for e in root.iter(f"{_NS}Prefix") if e.text and e.text != prefix]
            keys += [e.text or "" for e in root.iter(f"{_NS}Key")]
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return Listing(sorted(set(folders) - {prefix}), keys)
            token = root.findtext(f"{_NS}NextContinuationToken")
        raise S3Error(f"listing {prefix!r}: more than {MAX_PAGES} pages")

    def read(self, key: str) -> bytes | None:
        """The object's bytes; None when there is none."""
        status, body = self._call("GET", key)
        if status == 404:
            return None
        if status != 200:
            raise S3Error(f"reading {key!r}: S3 answered {status}")
        return body

    def modified(self, key: str) -> float | None:
        """The object's Last-Modified as seconds since the epoch; None when there is none."""
        status, _body, headers = self._exchange("HEAD", key, {})
        if status == 404:
            return None
        if status != 200:
            raise S3Error(f"stat of {key!r}: S3 answered {status}")
        stamp = datetime.datetime.strptime(headers["Last-Modified"], "%a, %d %b %Y %H:%M:%S GMT")
        return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()

    def delete(self, key: str) -> None:
        status, body = self._call("DELETE", key)
        if status not in (200, 204, 404):
            raise S3Error(f"deleting {key!r}: S3 answered {status}: {body[:200]!r}")

    def _call(self, method: str, key: str, params: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        status, body, _headers = self._exchange(method, key, params or {})
        return status, body

    def _exchange(self, method: str, key: str, params: Mapping[str, str]) -> tuple[int, bytes, dict[str, str]]:
        path = quote(f"/{self.settings.bucket}/{key}" if key else f"/{self.settings.bucket}", safe="/-_.~")
        query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
        headers = sign(self.settings, method, self._netloc, path, query, datetime.datetime.now(datetime.timezone.utc))
        connection_class = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        connection = connection_class(self._netloc, timeout=TIMEOUT)
        try:
            connection.request(method, f"{path}?{query}" if query else path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        except (OSError, http.client.HTTPException) as exc:
            raise S3Error(f"S3 at {self.settings.endpoint}: {exc}") from None
        finally:
            connection.close()


def sign(settings: S3Settings, method: str, host: str, path: str, query: str, now: datetime.datetime) -> dict[str, str]:
    """The headers of a SigV4-signed request without a body (AWS's "Signature Version 4")."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    headers = {"host": host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, path, query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, _EMPTY_SHA256,
    ])
    scope = f"{day}/{settings.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{settings.secret_key}".encode()
    for part in (day, settings.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "x-amz-content-sha256": _EMPTY_SHA256,
        "x-amz-date": stamp,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={settings.access_key}/{scope}, "
                         f"SignedHeaders={signed}, Signature={signature}",
    }
