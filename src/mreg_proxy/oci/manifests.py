"""Manifest requests: malformed references answered by the proxy, writes and deletes in turn.

registry 2.8 answers some malformed references with 500; the proxy answers them as the spec
says (spec/references.py). Pushes and deletes by digest go through oci/referrers.py, which keeps
the referrers index; deleting by tag removes that tag only (tagdelete.py).
"""

from __future__ import annotations

from aiohttp import web

from .. import errors
from ..keys import SESSION, SETTINGS, TAG_LOCKS
from ..spec.references import manifest_refusal
from ..spec.routes import Route
from ..transport.forwarder import pass_through
from .referrers import delete_manifest, put_manifest
from .tagdelete import delete_tag


def refused(route: Route) -> web.Response | None:
    """The proxy's answer to a malformed manifest reference (registry 2.8 answers some with 500)."""
    assert route.reference is not None
    refusal = manifest_refusal(route.method, route.reference)
    return None if refusal is None else errors.error_response(refusal.status, refusal.code, refusal.message)


async def handle_write(request: web.Request, route: Route) -> web.StreamResponse:
    """registry 2.8 fails a delete by digest (500, a tag left dangling) while another tag link of
    the repository is being written: manifest writes of one repository take turns with each other
    and with tag deletions. Manifests are small; blob uploads are not held up. A manifest with a
    ``subject`` is added to its subject's referrers index under the same lock."""
    if answer := refused(route):
        return answer
    app = request.app
    assert route.name is not None
    # across replicas the lock orders nothing: each push by tag is also verified (manifestguard.py)
    tag = route.reference if route.is_tag else None
    return await put_manifest(
        request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](route.name), route.name, tag,
        shared=app[SETTINGS].shared_storage,
    )


async def handle_delete(request: web.Request, route: Route) -> web.StreamResponse:
    if answer := refused(route):
        return answer
    app = request.app
    assert route.name is not None and route.reference is not None
    if not route.is_tag:  # by digest: the registry's own delete, then the referrers index
        return await delete_manifest(
            request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS](route.name), route.name, route.reference,
            shared=app[SETTINGS].shared_storage,
        )
    return await delete_tag(
        request, app[SESSION], app[SETTINGS].upstream, app[TAG_LOCKS], route.name, route.reference
    )
