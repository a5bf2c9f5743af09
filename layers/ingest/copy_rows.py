"""PostgreSQL binary COPY rows of features, built column by column instead of row by row.

A row of ``feature`` is ``(version_id int4, fid int8, props jsonb, geom geometry)``; in binary COPY
each field is its length and its bytes. Encoding 100,000 features one Python object at a time
(``shapely.to_wkb``, ``DataFrame.to_json``, a ``bytes.join`` of 400,000 parts) cost ~0.5 s holding
the GIL, a third of a whole load. Here every piece is a whole-chunk array:

- the geometries come as one Arrow array of WKB (``layers.ingest.wkb``), copied as they are;
- each attribute column becomes one array of JSON values (numbers by orjson on the numpy array,
  text quoted by Arrow, the rare text needing escapes by orjson);
- Arrow's ``binary_join_element_wise`` interleaves the fixed-width row heads, the JSON pieces and
  the WKB into one contiguous buffer, without the GIL.

``bench/ingest.py`` profiles it (``copy_rows``); ``tests/layers/test_ingest_speed.py`` checks the
layout field by field and the round trip through PostGIS.
"""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from layers.errors import InvalidInput
from layers.ingest.wkb import BINARY, fixed_width, values_buffer

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"
# What precedes a row's props: field count; int4 version_id; int8 fid; jsonb length and format version.
_ROW_HEAD = np.dtype([("fields", ">i2"), ("version_len", ">i4"), ("version_id", ">i4"), ("fid_len", ">i4"),
                      ("fid", ">i8"), ("props_len", ">i4"), ("jsonb_format", "u1")])
_ESCAPED = r'["\\\x00-\x1f]'  # what JSON strings cannot hold as is


def copy_rows(version_id: int, fids: np.ndarray, attributes: pd.DataFrame, wkb: pa.LargeBinaryArray) -> pa.Buffer:
    """The binary COPY rows ``(version_id, fid, props, geom)`` of a chunk (no header or trailer).

    ``wkb`` is 2D WKB (see ``layers.ingest.wkb``): the server gives it the SRID of the column's
    type modifier.

    Examples
    --------
    >>> point = pa.array([bytes.fromhex("0101000000000000000000f03f0000000000000040")], pa.large_binary())
    >>> data = copy_rows(7, np.array([1]), pd.DataFrame(index=[0]), point)
    >>> data.size == 27 + 2 + 4 + 21
    True
    """
    n = len(fids)
    if len(attributes) != n or len(wkb) != n:
        raise ValueError(f"{n} fids but {len(attributes)} attribute rows and {len(wkb)} geometries")
    props = json_object_pieces(attributes)
    head = np.empty(n, _ROW_HEAD)
    head["fields"] = 4
    head["version_len"] = 4
    head["version_id"] = version_id
    head["fid_len"] = 8
    head["fid"] = fids
    head["props_len"] = _joined_length(props, n) + 1
    head["jsonb_format"] = 1
    geom_len = pc.binary_length(wkb).to_numpy().astype(">i4")
    rows = pc.binary_join_element_wise(fixed_width(head), *props, fixed_width(geom_len), wkb,
                                       pa.scalar(b"", BINARY))
    return values_buffer(rows)


def json_object_pieces(attributes: pd.DataFrame) -> list[pa.Array | pa.Scalar]:
    """Pieces whose element-wise concatenation is each row's JSON object, ``{"name":value,...}``.

    Missing values and NaN are ``null``; floats keep full precision.
    """
    if attributes.shape[1] == 0:
        return [pa.scalar(b"{}", BINARY)]
    pieces: list[pa.Array | pa.Scalar] = []
    for i, name in enumerate(attributes.columns):
        key = orjson.dumps(str(name)) + b":"
        pieces.append(pa.scalar((b"{" if i == 0 else b",") + key, BINARY))
        pieces.append(json_values(attributes[name]))
    pieces.append(pa.scalar(b"}", BINARY))
    return pieces


def json_values(series: pd.Series) -> pa.Array:
    """One JSON value per element of a column.

    Examples
    --------
    >>> json_values(pd.Series(["红线", 'say "hi"', None])).to_pylist()
    [b'"\\xe7\\xba\\xa2\\xe7\\xba\\xbf"', b'"say \\\\"hi\\\\""', b'null']
    >>> json_values(pd.Series([1.0, float("nan"), 0.1])).to_pylist()
    [b'1.0', b'null', b'0.1']
    """
    try:
        values = pa.array(series, from_pandas=True)  # NaN and None alike become null
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = None  # mixed Python objects
    if isinstance(values, pa.ChunkedArray):  # a column pandas keeps in Arrow already
        values = values.combine_chunks()
    if values is not None and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        encoded = _json_strings(values)
    elif values is not None and (pa.types.is_integer(values.type) or pa.types.is_boolean(values.type)):
        encoded = pc.cast(values, pa.large_string()).cast(BINARY)
    elif values is not None and pa.types.is_floating(values.type):
        text = orjson.dumps(values.to_numpy(zero_copy_only=False), option=orjson.OPT_SERIALIZE_NUMPY)
        encoded = pa.array(text[1:-1].split(b",") if len(values) else [], BINARY)
    else:
        encoded = _json_objects(series)
    return pc.fill_null(encoded, pa.scalar(b"null", BINARY))


def _json_strings(values: pa.Array) -> pa.Array:
    """Quoted by Arrow; the few strings holding quotes, backslashes or control characters by orjson."""
    quote = pa.scalar(b'"', BINARY)
    quoted = pc.binary_join_element_wise(quote, values.cast(pa.large_string()).cast(BINARY), quote,
                                         pa.scalar(b"", BINARY))
    needs_escape = pc.fill_null(pc.match_substring_regex(values, _ESCAPED), False).to_numpy(zero_copy_only=False)
    where = np.flatnonzero(needs_escape)
    if not len(where):
        return quoted
    escaped = pa.array([orjson.dumps(text) for text in values.take(pa.array(where)).to_pylist()], BINARY)
    # Take from [quoted..., escaped...]: row i from escaped where it needed escapes.
    index = np.arange(len(values))
    index[where] = len(values) + np.arange(len(where))
    return pa.concat_arrays([quoted, escaped]).take(pa.array(index))


def _json_objects(series: pd.Series) -> pa.Array:
    """Any other column (dates, lists, mixed objects): orjson value by value."""
    values = series.astype(object).where(series.notna(), None)
    try:
        encoded = [orjson.dumps(v, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY) for v in values]
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"attribute {series.name!r} holds values that cannot be stored as JSON ({exc})") from None
    return pa.array(encoded, BINARY)


def _json_default(value: object) -> object:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _joined_length(pieces: list[pa.Array | pa.Scalar], n: int) -> np.ndarray:
    total = np.zeros(n, np.int64)
    for piece in pieces:
        if isinstance(piece, pa.Scalar):
            total += len(piece.as_py())
        else:
            total += pc.binary_length(piece).to_numpy()
    return total
