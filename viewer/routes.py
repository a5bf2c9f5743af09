"""The web map pages: ``/`` (layers), ``/conflicts`` (conflict review), ``/site`` (site check).

Static files (the page script, its styles and the vendored Leaflet) are served under
``/viewer/static/``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from api.deps import CatalogueDep, ConnDep, SettingsDep
from layers.errors import NotFound
from viewer.pages import STATIC_DIR, STATIC_URL, build_page, viewer_config

router = APIRouter(tags=["viewer"], include_in_schema=False)

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
          ".svg": "image/svg+xml", ".map": "application/json", ".md": "text/markdown; charset=utf-8"}


def _page(view: str, conn, settings, catalogue) -> HTMLResponse:
    config = viewer_config(conn, settings, catalogue, view=view)
    return HTMLResponse(build_page(config, settings), headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=HTMLResponse)
def map_page(conn: ConnDep, settings: SettingsDep, catalogue: CatalogueDep) -> HTMLResponse:
    """The map: layer tree, legend and popups over the vector tiles."""
    return _page("layers", conn, settings, catalogue)


@router.get("/conflicts", response_class=HTMLResponse)
def conflicts_page(conn: ConnDep, settings: SettingsDep, catalogue: CatalogueDep) -> HTMLResponse:
    """The map with the conflict review open."""
    return _page("conflicts", conn, settings, catalogue)


@router.get("/site", response_class=HTMLResponse)
def site_page(conn: ConnDep, settings: SettingsDep, catalogue: CatalogueDep) -> HTMLResponse:
    """The map with the site check open."""
    return _page("site", conn, settings, catalogue)


@router.get(STATIC_URL + "/{path:path}")
def static_file(path: str) -> FileResponse:
    """A file under viewer/static (no directory listing, nothing outside the folder)."""
    root = STATIC_DIR.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.suffix not in _TYPES:
        raise NotFound(f"no static file {path!r}")
    return FileResponse(target, media_type=_TYPES[target.suffix],
                        headers={"Cache-Control": "public, max-age=3600"})
