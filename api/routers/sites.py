"""HTTP routes for sites (being built)."""

from fastapi import APIRouter

router = APIRouter(tags=["sites"])
