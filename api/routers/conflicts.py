"""HTTP routes for conflicts (being built)."""

from fastapi import APIRouter

router = APIRouter(tags=["conflicts"])
