"""clerk's pages on pgqueue's dashboard (pgqueue.web): the Sites list, a site's page with its
pipeline drawn stage by stage, a sites panel on the overview, and two actions.

    app = create_dashboard(pipeline, read_only=False)    # a Starlette app
    pgqueue.web.serve(app, host, port)                   # what `clerk dashboard` does

Pages (each also JSON with `Accept: application/json` or `?format=json`):
    /sites                 every site: its run's state and stage, pages done/failed/total,
                           the last run's result and duration (keyset-paged: ?after=, ?q=)
    /sites/{site}          the run's stages as an SVG (fetch → OCR → compile ∥ extract →
                           compile → deploy), live counts, failed pages and jobs, document
                           problems, refused links, where its meetings.db is
    /_/sites, /_/sites/{site}, /_/clerk/panel   the partials htmx polls (counts without a
                           reload)
Actions (POST, not routed when read-only; pgqueue.web.check_post guards each):
    /sites/{site}/enqueue  `clerk enqueue SITE` (Pipeline.enqueue_site): start or join a run
    /sites/{site}/purge    `clerk purge SITE` (clerk.sites.purge_site), after a confirmation

Needs the `web` extra: import this module only where the dashboard is served, so `clerk
--help` does not load Starlette and Jinja.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Route

from clerk.pipeline import Pipeline
from clerk.web.pages import SitePages
from pgqueue.web import Extension, create_app

TEMPLATES = Path(__file__).resolve().parent / "templates"
POLL_SECONDS = 3  # how often the pages' counts refresh (htmx polling of their partials)


def clerk_extension(pipeline: Pipeline) -> Extension:
    """The site pages as a pgqueue.web Extension, bound to one pipeline."""
    pages = SitePages(pipeline)
    return Extension(
        name="clerk",
        nav=[("Sites", "/sites")],
        routes=[Route("/sites", pages.sites),
                Route("/_/sites", pages.sites_live),
                Route("/sites/{site}", pages.site),
                Route("/_/sites/{site}", pages.site_live),
                Route("/_/clerk/panel", pages.panel)],
        templates_dir=TEMPLATES,
        overview_panels=["clerk/overview_panel.html"],
        action_routes=[Route("/sites/{site}/enqueue", pages.enqueue, methods=["POST"]),
                       Route("/sites/{site}/purge", pages.purge, methods=["POST"])])


def create_dashboard(pipeline: Pipeline, *, read_only: bool = False) -> Starlette:
    """pgqueue's dashboard of clerk's queue, with the site pages."""
    return create_app(pipeline.queue, read_only=read_only,
                      extensions=[clerk_extension(pipeline)], title="clerk")


__all__ = ["POLL_SECONDS", "clerk_extension", "create_dashboard"]
