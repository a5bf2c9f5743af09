"""HTTP routes for tiles (being built)."""

from fastapi import APIRouter

router = APIRouter(tags=["tiles"])
