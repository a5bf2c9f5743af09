"""Typed FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request

from layers.catalogue import Catalogue, load_catalogue
from layers.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> sa.Engine:
    return request.app.state.engine


def get_conn(request: Request) -> Iterator[sa.Connection]:
    with request.app.state.engine.connect() as conn:
        yield conn


def get_catalogue() -> Catalogue:
    return load_catalogue()


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[sa.Engine, Depends(get_engine)]
ConnDep = Annotated[sa.Connection, Depends(get_conn)]
CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
