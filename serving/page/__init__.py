"""The managers' page: the ranked list, a deal's view, the team, the forecast and the funnel in a browser.

Served by the scoring service itself (``serving.service`` mounts ``page_app()`` at
``serving.guard.PAGE_PATH``, ``/page``), read from the score store that ``dealrisk score`` and, when
switched on, ``POST /score`` fill. Server-rendered HTML (Jinja2 templates and one style sheet,
shipped as package data): no front-end build step, no script. ``DEALRISK_API_TOKEN`` protects it
as it protects the scoring routes (``serving.guard``).
"""

from serving.page.app import page_app

__all__ = ["page_app"]
