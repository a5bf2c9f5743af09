"""The web map pages (being built)."""

from fastapi import APIRouter

router = APIRouter(tags=["viewer"])
