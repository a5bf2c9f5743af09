"""A layer's geometries on their way to storage: one Arrow array of little-endian 2D WKB.

Files already hold their geometries as WKB, and COPY stores WKB. Turning 100,000 40-vertex
polygons into shapely objects and back costs ~0.25 s and ~0.1 s holding the GIL, a third of a
load, though nearly every plan feature is a polygon of one ring. Such a polygon's WKB is a
13-byte head (byte order, type, ring count, point count) then its coordinates, so numpy reads it
without GEOS: ``plain_rings`` finds them from the heads and ``ring_coordinates`` cuts out their
coordinates in one Arrow slice. Validity (``layers.ingest.validity``), the extent and
reprojection work on those coordinates; only the rest (holes, multi-part, points, lines, Z, big
endian) is decoded into shapely objects, and re-encoded.

``tests/layers/test_wkb.py`` compares every function here with shapely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

BINARY = pa.large_binary()
RING_HEAD = np.dtype([("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4")])
RING_HEAD_SIZE = RING_HEAD.itemsize  # 13 bytes
_POLYGON = 3  # the WKB type code of a 2D polygon; shapely's type id for it is 3 too
# Rings per numpy pass. The pass's temporaries then stay in the CPU cache, and its buffers are
# reused instead of fresh memory page-faulted in (~3 ms per MB on our VM: the coordinates of 100k
# 41-vertex polygons at once took 0.2-0.5 s in a new process, in passes 0.05 s). The validity
# proof on 100k polygons: 0.20 CPU-s in passes of 65,536, 0.10 s of 4,096, 0.09 s of 1,024.
RING_CHUNK = 4_096
# Little-endian WKB heads that shapely objects are written with from their coordinates.
_WKB_HEADS = {
    0: (1, np.dtype([("order", "u1"), ("type", "<u4")])),  # Point
    1: (2, np.dtype([("order", "u1"), ("type", "<u4"), ("points", "<u4")])),  # LineString
    3: (3, RING_HEAD),  # Polygon
}


def as_wkb_array(values: pa.Array | pa.ChunkedArray | np.ndarray) -> pa.LargeBinaryArray:
    """Any binary column (Arrow, chunked, or a numpy array of bytes) as one ``large_binary`` array."""
    if isinstance(values, np.ndarray):
        return pa.array(values, BINARY, from_pandas=True)
    if isinstance(values, pa.ChunkedArray):  # widened chunk by chunk: 32-bit offsets cannot hold 2 GB joined
        chunks = [as_wkb_array(chunk) for chunk in values.chunks]
        return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks) if chunks else pa.array([], BINARY)
    if isinstance(values.type, pa.ExtensionType):  # geoarrow.wkb
        values = values.storage
    return values.cast(BINARY) if values.type != BINARY else values


def plain_rings(wkb: pa.LargeBinaryArray) -> np.ndarray:
    """Where ``wkb`` holds a little-endian 2D polygon of one ring of 4 or more points, laid out
    plainly (its length agrees with its point count): what numpy reads without GEOS.

    Examples
    --------
    >>> geoms = [shapely.box(0, 0, 1, 1), shapely.Point(0, 0), shapely.force_3d(shapely.box(0, 0, 1, 1))]
    >>> plain_rings(as_wkb_array(shapely.to_wkb(geoms, byte_order=1))).tolist()
    [True, False, False]
    """
    if len(wkb) == 0:
        return np.zeros(0, dtype=bool)
    lengths = pc.fill_null(pc.binary_length(wkb), 0).to_numpy()
    heads = _heads(wkb)
    plain = ((lengths == RING_HEAD_SIZE + 16 * heads["points"].astype(np.int64))
             & (heads["order"] == 1) & (heads["type"] == _POLYGON) & (heads["rings"] == 1)
             & (heads["points"] >= 4))
    # A ring must end where it starts: an open one goes to GEOS, which refuses it.
    where = np.flatnonzero(plain)
    if len(where):
        data = wkb.buffers()[2]
        # Every 16 bytes of the data, starting at each byte: a point wherever it lies (no copy).
        points = np.ndarray((data.size - 15,), np.dtype((np.void, 16)), data, strides=(1,))
        offsets = np.frombuffer(wkb.buffers()[1], np.int64)[wkb.offset:wkb.offset + len(wkb) + 1]
        plain[where] = points[offsets[where] + RING_HEAD_SIZE] == points[offsets[where + 1] - 16]
    return plain


def _heads(wkb: pa.LargeBinaryArray) -> np.ndarray:
    """The first 13 bytes of each element as ring heads (zero-padded where shorter)."""
    zeros = pa.scalar(bytes(RING_HEAD_SIZE), BINARY)
    cut = pc.binary_slice(pc.fill_null(wkb, b""), 0, RING_HEAD_SIZE)
    padded = pc.binary_slice(pc.binary_join_element_wise(cut, zeros, pa.scalar(b"", BINARY)), 0, RING_HEAD_SIZE)
    return np.frombuffer(values_buffer(padded), RING_HEAD, count=len(wkb))


def ring_coordinates(wkb: pa.LargeBinaryArray) -> tuple[np.ndarray, np.ndarray]:
    """``(xy, counts)`` of polygons that are all plain rings (see ``plain_rings``): their
    coordinates, ring after ring, as a read-only ``(points, 2)`` array, and each ring's number of
    points."""
    counts = _heads(wkb)["points"].astype(np.int64)
    longest = pc.max(pc.binary_length(wkb)).as_py() or 0
    coordinates = pc.binary_slice(wkb, RING_HEAD_SIZE, max(longest, RING_HEAD_SIZE))
    return np.frombuffer(values_buffer(coordinates), "<f8").reshape(-1, 2), counts


def ring_chunks(wkb: pa.LargeBinaryArray, where: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(positions, xy, counts)`` of the plain rings at ``where`` (see ``ring_coordinates``),
    ``RING_CHUNK`` rings at a time."""
    for start in range(0, len(where), RING_CHUNK):
        chunk = where[start:start + RING_CHUNK]
        contiguous = chunk[-1] - chunk[0] + 1 == len(chunk)
        yield chunk, *ring_coordinates(take(wkb, slice(chunk[0], chunk[-1] + 1) if contiguous else chunk))


def rings_wkb(xy: np.ndarray, counts: np.ndarray) -> pa.LargeBinaryArray:
    """WKB of one-ring polygons from their coordinates (the inverse of ``ring_coordinates``)."""
    return _assemble(_POLYGON, xy, counts)


def wkb_array(geoms: np.ndarray) -> pa.LargeBinaryArray:
    """Little-endian 2D WKB of shapely geometries: points, lines and one-ring polygons written from
    their coordinates by numpy, the rest by ``shapely.to_wkb``.

    Examples
    --------
    >>> geoms = np.array([shapely.box(0, 0, 1, 1), shapely.MultiPoint([(0, 0), (1, 1)])])
    >>> wkb_array(geoms).to_pylist() == shapely.to_wkb(geoms, byte_order=1, output_dimension=2).tolist()
    True
    """
    type_ids = shapely.get_type_id(geoms)
    simple = np.isin(type_ids, list(_WKB_HEADS))
    simple[type_ids == 3] &= shapely.get_num_interior_rings(geoms[type_ids == 3]) == 0
    groups: list[tuple[np.ndarray, pa.Array]] = []
    for type_id in np.unique(type_ids[simple]).tolist():
        where = np.flatnonzero(simple & (type_ids == type_id))
        same = geoms[where]
        groups.append((where, _assemble(type_id, shapely.get_coordinates(same), shapely.get_num_coordinates(same))))
    rest = np.flatnonzero(~simple)
    if len(rest):
        groups.append((rest, as_wkb_array(shapely.to_wkb(geoms[rest], byte_order=1, output_dimension=2))))
    return _in_order(groups, len(geoms))


def replace(wkb: pa.LargeBinaryArray, positions: np.ndarray, replacement: pa.LargeBinaryArray) -> pa.LargeBinaryArray:
    """``wkb`` with the elements at ``positions`` replaced by ``replacement``'s, in order."""
    if not len(positions):
        return wkb
    keep = np.ones(len(wkb), dtype=bool)
    keep[positions] = False
    kept = np.flatnonzero(keep)
    return _in_order([(kept, wkb.take(pa.array(kept))), (positions, replacement)], len(wkb))


def take(wkb: pa.LargeBinaryArray, positions: slice | np.ndarray) -> pa.LargeBinaryArray:
    """The elements at ``positions``: a slice (zero-copy) or an array of positions."""
    if isinstance(positions, slice):
        start, stop, _ = positions.indices(len(wkb))
        return wkb.slice(start, max(stop - start, 0))
    return wkb.take(pa.array(positions))


def objects(wkb: pa.LargeBinaryArray) -> np.ndarray:
    """Shapely geometries of WKB elements (GEOS parses them)."""
    return shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))


def total_bounds(wkb: pa.LargeBinaryArray) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` over all geometries, NaN coordinates ignored as shapely does;
    plain rings without GEOS."""
    plain = plain_rings(wkb)
    boxes = [points_bounds(xy) for _, xy, _ in ring_chunks(wkb, np.flatnonzero(plain))]
    if not plain.all():
        boxes.append(tuple(shapely.total_bounds(objects(take(wkb, np.flatnonzero(~plain))))))
    return union_bounds(boxes)


def points_bounds(xy: np.ndarray) -> tuple[float, float, float, float]:
    """The bounds of an ``(n, 2)`` array of points, NaN ignored. Column by column: numpy reduces
    an ``(n, 2)`` array along axis 0 eight times slower."""
    x, y = xy[:, 0], xy[:, 1]
    return np.fmin.reduce(x), np.fmin.reduce(y), np.fmax.reduce(x), np.fmax.reduce(y)


def union_bounds(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    box = np.array(boxes, dtype=float).reshape(-1, 4)
    xmin, ymin = np.nanmin(box[:, :2], axis=0)
    xmax, ymax = np.nanmax(box[:, 2:], axis=0)
    return float(xmin), float(ymin), float(xmax), float(ymax)


def transform(wkb: pa.LargeBinaryArray, transform_xy: Callable[[np.ndarray, np.ndarray], tuple]) -> pa.LargeBinaryArray:
    """Every geometry's coordinates through ``transform_xy(x, y) -> (x, y)`` (e.g. a pyproj
    transformer's ``transform``); plain rings without GEOS."""
    plain = plain_rings(wkb)
    groups = [(where, rings_wkb(np.column_stack(transform_xy(xy[:, 0], xy[:, 1])), counts))
              for where, xy, counts in ring_chunks(wkb, np.flatnonzero(plain))]
    rest = np.flatnonzero(~plain)
    if len(rest):
        moved = shapely.transform(objects(take(wkb, rest)),
                                  lambda xy: np.column_stack(transform_xy(xy[:, 0], xy[:, 1])))
        groups.append((rest, wkb_array(moved)))
    return _in_order(groups, len(wkb))


def _assemble(type_id: int, coords: np.ndarray, counts: np.ndarray) -> pa.LargeBinaryArray:
    """WKB of single-part geometries of one shapely type from their coordinates, head and points."""
    wkb_type, dtype = _WKB_HEADS[type_id]
    head = np.empty(len(counts), dtype)
    head["order"] = 1
    head["type"] = wkb_type
    if type_id == 3:
        head["rings"] = 1
    if type_id != 0:
        head["points"] = counts
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(np.asarray(counts, np.int64) * 16, out=offsets[1:])
    points = pa.LargeBinaryArray.from_buffers(BINARY, len(counts), [
        None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(coords, dtype="<f8"))])
    return pc.binary_join_element_wise(fixed_width(head), points, pa.scalar(b"", BINARY))


def _in_order(groups: list[tuple[np.ndarray, pa.Array]], n: int) -> pa.LargeBinaryArray:
    """One array from groups of (positions, elements) that together cover 0..n-1 once."""
    if len(groups) == 1:
        return groups[0][1]
    if not groups:
        return pa.array([], BINARY)
    # Position i of the concatenation holds element order[i].
    order = np.concatenate([where for where, _ in groups])
    joined = pa.concat_arrays([array for _, array in groups])
    if np.all(order[1:] > order[:-1]):  # groups in sequence (ring chunks): no second copy
        return joined
    return joined.take(pa.array(np.argsort(order, kind="stable")))


def fixed_width(records: np.ndarray) -> pa.LargeBinaryArray:
    """A numpy array of fixed-width records as a binary array, one element per record, no copy."""
    width = records.dtype.itemsize
    offsets = np.arange(len(records) + 1, dtype=np.int64) * width
    return pa.LargeBinaryArray.from_buffers(BINARY, len(records), [None, pa.py_buffer(offsets),
                                                                    pa.py_buffer(np.ascontiguousarray(records))])


def values_buffer(array: pa.Array) -> pa.Buffer:
    """The concatenated values of a binary array: its data buffer between the first and last offsets."""
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset:array.offset + len(array) + 1]
    return array.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
