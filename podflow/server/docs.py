"""The API documentation page at ``/docs``: Swagger UI from the server itself, never a CDN.

``npm run build`` (in ``web/``) copies Swagger UI's browser assets from the pinned
``swagger-ui-dist`` package into ``web/dist/swagger-ui/``; the UI's static mount serves them
at ``/swagger-ui/...`` and :func:`docs_page` points the page there, so air-gapped clusters
get a working page. Swagger UI's online validator badge (a request to a public service) is
turned off. Without the assets the page says how to build them and links the OpenAPI
document, which needs nothing.

Example::

    >>> page = docs_page(None, title="podflow")
    >>> page.status_code, "npm run build" in bytes(page.body).decode()
    (503, True)
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

ASSET_DIR = "swagger-ui"
"""Directory of the built UI (``web/dist``) holding Swagger UI's assets."""
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
"""The files the page loads, all under :data:`ASSET_DIR`."""

NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>{title} API</title>
</head><body style="font-family: sans-serif; max-width: 46em; margin: 3em auto">
<h1>{title}: the API documentation page is not built</h1>
<p>The API works; its description is <a href="{openapi}">{openapi}</a>. The interactive
page needs Swagger UI's files, which the web build copies into
<code>{where}</code>:</p>
<pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>then reload this page.</p></body></html>"""


def docs_assets_present(web_dist: Path | None) -> bool:
    """True when the built UI holds every Swagger UI asset the page loads."""
    return web_dist is not None and all((web_dist / ASSET_DIR / name).is_file()
                                        for name in ASSETS)


def docs_page(web_dist: Path | None, *, title: str, openapi_url: str = "/openapi.json",
              root_path: str = "") -> HTMLResponse:
    """Swagger UI over ``openapi_url`` with local assets, or a 503 page saying how to build.

    ``root_path`` prefixes every URL (a server mounted under a path by a proxy).
    """
    openapi = root_path + openapi_url
    if not docs_assets_present(web_dist):
        where = f"{web_dist}/{ASSET_DIR}" if web_dist is not None else f"web/dist/{ASSET_DIR}"
        return HTMLResponse(NOT_BUILT.format(title=html.escape(title), openapi=openapi,
                                             where=html.escape(where)), status_code=503)
    base = f"{root_path}/{ASSET_DIR}"
    return get_swagger_ui_html(
        openapi_url=openapi, title=f"{title} API",
        swagger_js_url=f"{base}/swagger-ui-bundle.js",
        swagger_css_url=f"{base}/swagger-ui.css",
        swagger_favicon_url=f"{base}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None})
