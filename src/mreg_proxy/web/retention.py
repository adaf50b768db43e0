"""A repository's retention dry run on the web page: read-only, for whoever may run retention there.

Nothing is planned here: the page asks the proxy's own retention run (oci/retention_runs.py
``run_retention`` with ``dry_run=True``, through ``Maintenance.dry_run``) and shows its lines
exactly as ``mreg-manage retention HOST/REPO --dry-run`` prints them (policy/retention.py
``line``). Who may see it is decided by the same ``Principal.may_delete_in`` as
``POST /mreg/retention``; anybody else gets the page of a repository that does not exist.
"""

from __future__ import annotations

from aiohttp import web

from ..keys import MAINTENANCE, POLICY
from ..oci.retention_runs import RetentionError
from ..policy.retention import RepositoryPlan, line
from ..transport.forwarder import UPSTREAM_ERRORS
from .login import Viewer
from .pages import may_see_retention, missing, repository_path
from .render import WebState, problem, render
from .views import PAGE_BYTES, human_size

LINE_BUDGETS = (200, 50, 10)  # lines shown: the first count whose page stays under PAGE_BYTES
MAX_IMMUTABLE = 50  # immutable tags named as kept; the rest are counted


async def dry_run(request: web.Request, state: WebState, viewer: Viewer) -> web.Response:
    name = request.match_info["tail"]
    if not may_see_retention(viewer.principal, name):
        return missing(request, state, viewer)
    tags = await state.reader.tags(name)
    if tags is None:
        return missing(request, state, viewer)
    policy = await request.app[POLICY].fresh()
    try:
        report = await request.app[MAINTENANCE].dry_run(policy, viewer.principal.may_delete_in, name, viewer.name)
    except RetentionError as exc:
        return problem(request, state, 502, "No dry run", f"The registry did not answer properly: {exc}",
                       viewer=viewer, csrf=viewer.csrf)
    except UPSTREAM_ERRORS:
        return problem(request, state, 502, "No dry run", "The registry did not answer; try again shortly.",
                       viewer=viewer, csrf=viewer.csrf)
    plan = report.plans[0] if report.plans else RepositoryPlan(name, None, left_alone="no rule")
    lines = [line(item) for item in plan.doomed]
    immutable = [(tag, str(rule)) for tag in sorted(tags) if (rule := policy.immutable_rule(name, tag))]
    rule = f"{plan.rule.pattern}: {', '.join(plan.rule.clauses())}" if plan.rule else ""
    for budget in LINE_BUDGETS:
        response = render(
            request, state, "retention.html", viewer=viewer, csrf=viewer.csrf, name=name,
            repository=repository_path(name), rule=rule,
            left_alone=plan.left_alone if plan.rule else "", lines=lines[:budget],
            more=max(0, len(lines) - budget), count=len(lines), freed=plan.freed, freed_text=human_size(plan.freed),
            immutable=immutable[:MAX_IMMUTABLE], more_immutable=max(0, len(immutable) - MAX_IMMUTABLE),
        )
        assert isinstance(response.body, bytes)
        if len(response.body) < PAGE_BYTES:
            break
    return response
