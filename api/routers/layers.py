"""The catalogue and the layers: GET /api/v1/catalogue, /api/v1/layers, /api/v1/layers/{code}."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CatalogueDep, ConnDep
from layers import store

router = APIRouter(prefix="/api/v1", tags=["layers"])


@router.get("/catalogue")
def catalogue(catalogue: CatalogueDep) -> list[dict]:
    """The 4 major / 11 middle / 40+ minor class hierarchy."""
    return catalogue.hierarchy()


@router.get("/layers")
def layers(conn: ConnDep, catalogue: CatalogueDep) -> list[dict]:
    """Every layer with its current version, feature count and extent (storage CRS)."""
    return store.list_layers(conn, catalogue)


@router.get("/layers/{code}")
def layer(code: str, conn: ConnDep, catalogue: CatalogueDep) -> dict:
    """One layer: its catalogue entry and all its versions, oldest first."""
    minor = catalogue.minor(code)
    return {**minor.summary(), "versions": [v.as_dict() for v in store.layer_versions(conn, code)]}
