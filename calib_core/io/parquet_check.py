"""Integrity check of a parquet file without decoding it into arrays.

A parquet file can be damaged where its footer does not look: 4 KB of garbage
written into the middle of a signal file leaves a readable footer and valid
row-group metadata, and is only found by the reader that decodes the damaged
page (``OSError: Unexpected end of stream``), i.e. in the middle of a run.
Decoding the whole file with pyarrow to find out costs as much as reading it
for the run (6-11 s for a full-size AIRS-CH0 file on the project's 2-core
machine: the per-column-chunk overhead of 250,000 column chunks dominates).

:func:`check_parquet_file` instead walks the raw bytes once in compiled code
(numba, the file memory-mapped):

1. the footer (Thrift compact protocol) is parsed into a table of column
   chunks: codec, number of values, byte range, statistics;
2. every column chunk must lie inside the data region, not overlap another,
   and hold ``num_rows`` values of its row group; statistics, when written,
   give null counts and min/max (checked by the caller);
3. every page header of every column chunk is parsed; the pages must tile the
   chunk exactly and their value counts add up to the chunk's;
4. SNAPPY pages are decompressed into a scratch buffer (a corrupt stream has
   wrong lengths or copy offsets), UNCOMPRESSED pages must have equal sizes;
   then the definition levels are decoded (no nulls: every value present) and
   dictionary-encoded values decoded far enough to check every index is inside
   the dictionary, PLAIN values must fill the page exactly;
5. pages of other codecs (GZIP, ZSTD, LZ4, BROTLI) are decompressed with
   :func:`pyarrow.decompress` one page at a time (integrity of the stream only).

Garbage that stays inside a PLAIN page of an uncompressed file is valid data
by construction and cannot be told from it; every other kind of damage seen
so far is found.  Results are cached per (path, size, mtime, inode) in the
process.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from numba import njit

from .kaggle import DataLayoutError

__all__ = ["ParquetSummary", "check_parquet_file"]

log = logging.getLogger(__name__)

# Thrift compact protocol types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)
_ELEM_BOOL = 13  # a boolean inside a list/set/map: one byte (in a struct field the type carries the value)

# parquet enums
_CODEC_NAMES = {0: "UNCOMPRESSED", 1: "SNAPPY", 2: "GZIP", 3: "LZO", 4: "BROTLI", 5: "LZ4", 6: "ZSTD", 7: "LZ4_RAW"}
_PYARROW_CODEC = {2: "gzip", 4: "brotli", 5: "lz4", 6: "zstd", 7: "lz4_raw"}
_DATA_PAGE, _INDEX_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 1, 2, 3
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
_PHYSICAL_BYTES = {0: 0, 1: 4, 2: 8, 3: 12, 4: 4, 5: 8}  # BOOLEAN is bit-packed: not checked

# error codes of the compiled walkers (index into _ERRORS)
_OK = 0
_ERRORS = (
    "",
    "truncated or malformed Thrift structure",                   # 1
    "column chunk byte range outside the data region",           # 2
    "column chunks overlap",                                      # 3
    "page header not parseable",                                  # 4
    "page extends past the end of its column chunk",              # 5
    "pages do not tile the column chunk",                         # 6
    "page value counts do not add up to the column chunk's",      # 7
    "corrupt SNAPPY stream",                                      # 8
    "compressed and uncompressed page sizes differ for an uncompressed page",  # 9
    "null values (definition levels below the maximum)",         # 10
    "corrupt definition levels",                                  # 11
    "dictionary index outside the dictionary",                    # 12
    "corrupt dictionary-encoded values",                          # 13
    "PLAIN values do not fill the page",                          # 14
    "data page before the dictionary page or a second dictionary page",  # 15
    "too many nested Thrift containers",                          # 16
    "page list capacity exceeded",                                # 17 (internal: retried with more room)
)
_ERR_CAPACITY = 17


# ---------------------------------------------------------------------------
# Thrift compact protocol (compiled)
# ---------------------------------------------------------------------------


@njit(cache=True)
def _varint(buf, pos, end):
    """Unsigned LEB128 varint at ``pos``: (value, next position), next position -1 when malformed."""
    result = np.int64(0)
    shift = 0
    while pos < end and shift < 64:
        b = np.int64(buf[pos])
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    return np.int64(0), np.int64(-1)


@njit(cache=True)
def _zigzag(n):
    return (n >> 1) ^ -(n & 1)


@njit(cache=True)
def _int_value(buf, pos, end):
    """A zigzag-encoded i16/i32/i64 value: (value, next position or -1)."""
    z, pos = _varint(buf, pos, end)
    return _zigzag(z), pos


@njit(cache=True)
def _field(buf, pos, end, last):
    """Field header after field id ``last``: (field id, type, next position); type 0 = STOP; position -1 = error."""
    if pos < 0 or pos >= end:
        return np.int64(0), np.int64(0), np.int64(-1)
    h = np.int64(buf[pos])
    pos += 1
    t = h & 15
    if t == _STOP:
        return np.int64(0), np.int64(0), pos
    delta = h >> 4
    if delta == 0:
        z, pos = _varint(buf, pos, end)
        if pos < 0:
            return np.int64(0), np.int64(0), np.int64(-1)
        return _zigzag(z), t, pos
    return last + delta, t, pos


@njit(cache=True)
def _list_header(buf, pos, end):
    """List/set header: (size, element type, next position or -1)."""
    if pos < 0 or pos >= end:
        return np.int64(0), np.int64(0), np.int64(-1)
    h = np.int64(buf[pos])
    pos += 1
    size = h >> 4
    et = h & 15
    if size == 15:
        size, pos = _varint(buf, pos, end)
    return size, et, pos


@njit(cache=True)
def _skip_scalar(buf, pos, end, t):
    """Skip one non-container value: next position or -1."""
    if pos < 0 or pos > end:
        return np.int64(-1)
    if t == _TRUE or t == _FALSE:
        return pos
    if t == _BYTE or t == _ELEM_BOOL:
        pos += 1
    elif t == _I16 or t == _I32 or t == _I64:
        _, pos = _varint(buf, pos, end)
    elif t == _DOUBLE:
        pos += 8
    elif t == _BINARY:
        n, pos = _varint(buf, pos, end)
        if pos < 0 or n < 0:
            return np.int64(-1)
        pos += n
    else:
        return np.int64(-1)
    return pos if pos <= end else np.int64(-1)


@njit(cache=True)
def _skip(buf, pos, end, t):
    """Skip one value of compact type ``t`` (containers included): next position, or -1 (malformed), -2 (too deep)."""
    if t != _LIST and t != _SET and t != _MAP and t != _STRUCT:
        return _skip_scalar(buf, pos, end, t)
    if t == _LIST or t == _SET:                   # lists of scalars (encodings, paths) need no stack
        n, et, p = _list_header(buf, pos, end)
        if p >= 0 and et != _LIST and et != _SET and et != _MAP and et != _STRUCT:
            et = _ELEM_BOOL if (et == _TRUE or et == _FALSE) else et
            for _ in range(n):
                p = _skip_scalar(buf, p, end, et)
                if p < 0:
                    return p
            return p
    kind = np.zeros(64, np.int64)      # 0 struct, 1 list/set, 2 map
    remaining = np.zeros(64, np.int64)
    t1 = np.zeros(64, np.int64)
    t2 = np.zeros(64, np.int64)
    depth = 0
    while True:
        if pos < 0 or pos > end:
            return np.int64(-1)
        if t == _TRUE or t == _FALSE:
            pass
        elif t == _BYTE or t == _ELEM_BOOL:
            pos += 1
        elif t == _I16 or t == _I32 or t == _I64:
            _, pos = _varint(buf, pos, end)
        elif t == _DOUBLE:
            pos += 8
        elif t == _BINARY:
            n, pos = _varint(buf, pos, end)
            if pos < 0 or n < 0:
                return np.int64(-1)
            pos += n
        elif t == _LIST or t == _SET:
            n, et, pos = _list_header(buf, pos, end)
            if depth >= 64:
                return np.int64(-2)
            kind[depth], remaining[depth], t1[depth] = 1, n, et
            depth += 1
        elif t == _MAP:
            n, pos = _varint(buf, pos, end)
            kt = np.int64(0)
            vt = np.int64(0)
            if n > 0:
                if pos < 0 or pos >= end:
                    return np.int64(-1)
                kt, vt = np.int64(buf[pos]) >> 4, np.int64(buf[pos]) & 15
                pos += 1
            if depth >= 64:
                return np.int64(-2)
            kind[depth], remaining[depth], t1[depth], t2[depth] = 2, 2 * n, kt, vt
            depth += 1
        elif t == _STRUCT:
            if depth >= 64:
                return np.int64(-2)
            kind[depth], remaining[depth] = 0, 0   # remaining holds the last field id
            depth += 1
        else:
            return np.int64(-1)
        if pos < 0 or pos > end:
            return np.int64(-1)
        # the next value to consume
        found = False
        while not found:
            if depth == 0:
                return pos
            top = depth - 1
            if kind[top] == 0:
                fid, ft, pos = _field(buf, pos, end, remaining[top])
                if pos < 0:
                    return np.int64(-1)
                if ft == _STOP:
                    depth -= 1
                    continue
                remaining[top] = fid
                t = ft
                found = True
            elif kind[top] == 1:
                if remaining[top] <= 0:
                    depth -= 1
                    continue
                remaining[top] -= 1
                t = t1[top]
                found = True
            else:
                if remaining[top] <= 0:
                    depth -= 1
                    continue
                t = t1[top] if remaining[top] % 2 == 0 else t2[top]
                remaining[top] -= 1
                found = True
            if t == _TRUE or t == _FALSE:
                if kind[top] != 0:
                    t = _ELEM_BOOL


@njit(cache=True)
def _le_int(buf, pos, n):
    """Signed little-endian integer of ``n`` (1..8) bytes."""
    v = np.int64(0)
    for i in range(n):
        v |= np.int64(buf[pos + i]) << (8 * i)
    if n < 8 and v >= (np.int64(1) << (8 * n - 1)):
        v -= np.int64(1) << (8 * n)
    return v


# ---------------------------------------------------------------------------
# footer: FileMetaData -> column chunk table
# ---------------------------------------------------------------------------


@njit(cache=True)
def _statistics(buf, pos, end, out, k):
    """Read a Statistics struct into ``out[k]`` = [null_count, min, max, has_min, has_max] (-1 = absent)."""
    last = np.int64(0)
    old_min = np.int64(0)
    old_max = np.int64(0)
    has_old_min = False
    has_old_max = False
    while True:
        fid, t, pos = _field(buf, pos, end, last)
        if pos < 0:
            return np.int64(-1)
        if t == _STOP:
            break
        last = fid
        if fid == 3 and t == _I64:
            v, pos = _int_value(buf, pos, end)
            out[k, 0] = v
        elif (fid == 1 or fid == 2 or fid == 5 or fid == 6) and t == _BINARY:
            n, pos = _varint(buf, pos, end)
            if pos < 0 or n < 0 or pos + n > end:
                return np.int64(-1)
            if 1 <= n <= 8:
                v = _le_int(buf, pos, n)
                if fid == 6:
                    out[k, 1], out[k, 3] = v, 1
                elif fid == 5:
                    out[k, 2], out[k, 4] = v, 1
                elif fid == 2:
                    old_min, has_old_min = v, True
                else:
                    old_max, has_old_max = v, True
            pos += n
        else:
            pos = _skip(buf, pos, end, t)
            if pos < 0:
                return pos
    if out[k, 3] == 0 and has_old_min:
        out[k, 1], out[k, 3] = old_min, 1
    if out[k, 4] == 0 and has_old_max:
        out[k, 2], out[k, 4] = old_max, 1
    return pos


@njit(cache=True)
def _column_meta(buf, pos, end, chunks, stats, k):
    """ColumnMetaData into ``chunks[k]`` = [type, codec, num_values, total_compressed, data_off, dict_off, ...]."""
    last = np.int64(0)
    while True:
        fid, t, pos = _field(buf, pos, end, last)
        if pos < 0:
            return np.int64(-1)
        if t == _STOP:
            return pos
        last = fid
        if t == _I32 or t == _I64:
            v, pos = _int_value(buf, pos, end)
            if fid == 1:
                chunks[k, 0] = v
            elif fid == 4:
                chunks[k, 1] = v
            elif fid == 5:
                chunks[k, 2] = v
            elif fid == 7:
                chunks[k, 3] = v
            elif fid == 9:
                chunks[k, 4] = v
            elif fid == 11:
                chunks[k, 5] = v
        elif fid == 12 and t == _STRUCT:
            pos = _statistics(buf, pos, end, stats, k)
        else:
            pos = _skip(buf, pos, end, t)
        if pos < 0:
            return pos


@njit(cache=True)
def _parse_footer(buf, pos, end):
    """Parse FileMetaData in one pass.

    Returns (error code, chunks, stats, rg_rows, leaves, number of chunks, number of row groups,
    number of schema elements, num_rows) with ``chunks`` (n, 8): physical type, codec, num_values,
    total_compressed_size, data_page_offset, dictionary_page_offset, row group, column; ``stats``
    (n, 5): null_count, min, max, has_min, has_max (see :func:`_statistics`); ``rg_rows`` (row
    groups,); ``leaves`` (schema elements, 3): repetition type, physical type, num_children.  The
    arrays are sized from the list headers (row groups x schema leaves); chunks beyond that are
    counted but not stored (the caller refuses the file).
    """
    chunks = np.zeros((1, 8), np.int64)
    stats = np.zeros((1, 5), np.int64)
    rg_rows = np.zeros(0, np.int64)
    leaves = np.zeros((0, 3), np.int64)
    last = np.int64(0)
    n_chunks = np.int64(0)
    n_rg = np.int64(0)
    n_schema = np.int64(0)
    num_rows = np.int64(-1)
    while True:
        fid, t, pos = _field(buf, pos, end, last)
        if pos < 0:
            return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
        if t == _STOP:
            return 0, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
        last = fid
        if fid == 2 and t == _LIST:                       # schema: list<SchemaElement>
            n, et, pos = _list_header(buf, pos, end)
            if pos < 0 or et != _STRUCT or n < 0 or n > end - pos:
                return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
            leaves = np.full((n, 3), -1, np.int64)
            for i in range(n):
                rep, phys, children = np.int64(-1), np.int64(-1), np.int64(0)
                flast = np.int64(0)
                while True:
                    ffid, ft, pos = _field(buf, pos, end, flast)
                    if pos < 0:
                        return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                    if ft == _STOP:
                        break
                    flast = ffid
                    if ft == _I32 and (ffid == 1 or ffid == 3 or ffid == 5):
                        v, pos = _int_value(buf, pos, end)
                        if ffid == 1:
                            phys = v
                        elif ffid == 3:
                            rep = v
                        else:
                            children = v
                    else:
                        pos = _skip(buf, pos, end, ft)
                    if pos < 0:
                        return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                if n_schema < leaves.shape[0]:
                    leaves[n_schema, 0], leaves[n_schema, 1], leaves[n_schema, 2] = rep, phys, children
                n_schema += 1
        elif fid == 3 and t == _I64:
            num_rows, pos = _int_value(buf, pos, end)
        elif fid == 4 and t == _LIST:                     # row_groups: list<RowGroup>
            n, et, pos = _list_header(buf, pos, end)
            if pos < 0 or et != _STRUCT or n < 0 or n > end - pos:
                return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
            rg_rows = np.full(n, -1, np.int64)
            cap = n * max(leaves.shape[0] - 1, 0)
            if cap > 0 and cap <= end - pos:
                chunks = np.zeros((cap, 8), np.int64)
                chunks[:, 5] = -1
                stats = np.full((cap, 5), -1, np.int64)
                stats[:, 3:] = 0
            for g in range(n):
                glast = np.int64(0)
                col = np.int64(0)
                while True:
                    gfid, gt, pos = _field(buf, pos, end, glast)
                    if pos < 0:
                        return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                    if gt == _STOP:
                        break
                    glast = gfid
                    if gfid == 1 and gt == _LIST:         # columns: list<ColumnChunk>
                        nc, cet, pos = _list_header(buf, pos, end)
                        if pos < 0 or cet != _STRUCT:
                            return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                        for _ in range(nc):
                            clast = np.int64(0)
                            while True:
                                cfid, ct, pos = _field(buf, pos, end, clast)
                                if pos < 0:
                                    return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                                if ct == _STOP:
                                    break
                                clast = cfid
                                if cfid == 3 and ct == _STRUCT:
                                    # past the capacity the last row is scratch (the caller refuses the file)
                                    row = min(n_chunks, chunks.shape[0] - 1)
                                    chunks[row, 6] = n_rg
                                    chunks[row, 7] = col
                                    pos = _column_meta(buf, pos, end, chunks, stats, row)
                                else:
                                    pos = _skip(buf, pos, end, ct)
                                if pos < 0:
                                    return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                            n_chunks += 1
                            col += 1
                    elif gfid == 3 and gt == _I64:
                        v, pos = _int_value(buf, pos, end)
                        if n_rg < rg_rows.shape[0]:
                            rg_rows[n_rg] = v
                    else:
                        pos = _skip(buf, pos, end, gt)
                    if pos < 0:
                        return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows
                n_rg += 1
        else:
            pos = _skip(buf, pos, end, t)
            if pos < 0:
                return 1, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows


# ---------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------


@njit(cache=True)
def _page_header(buf, pos, end, hdr):
    """Parse a PageHeader into ``hdr`` = [type, uncompressed, compressed, num_values, encoding, def_len, rep_len,
    is_compressed, num_nulls, def_encoding]; returns the position after the header or -1."""
    for i in range(hdr.shape[0]):
        hdr[i] = -1
    hdr[7] = 1
    last = np.int64(0)
    while True:
        fid, t, pos = _field(buf, pos, end, last)
        if pos < 0:
            return np.int64(-1)
        if t == _STOP:
            return pos
        last = fid
        if fid <= 3 and t == _I32:
            v, pos = _int_value(buf, pos, end)
            hdr[fid - 1] = v
        elif (fid == 5 or fid == 7 or fid == 8) and t == _STRUCT:
            slast = np.int64(0)
            while True:
                sfid, st, pos = _field(buf, pos, end, slast)
                if pos < 0:
                    return np.int64(-1)
                if st == _STOP:
                    break
                slast = sfid
                if st == _I32:
                    v, pos = _int_value(buf, pos, end)
                    if sfid == 1:
                        hdr[3] = v
                    elif fid == 5 and sfid == 2:
                        hdr[4] = v
                    elif fid == 5 and sfid == 3:
                        hdr[9] = v
                    elif fid == 7 and sfid == 2:
                        hdr[4] = v
                    elif fid == 8 and sfid == 2:
                        hdr[8] = v
                    elif fid == 8 and sfid == 4:
                        hdr[4] = v
                    elif fid == 8 and sfid == 5:
                        hdr[5] = v
                    elif fid == 8 and sfid == 6:
                        hdr[6] = v
                elif fid == 8 and sfid == 7 and (st == _TRUE or st == _FALSE):
                    hdr[7] = 1 if st == _TRUE else 0
                else:
                    pos = _skip(buf, pos, end, st)
                if pos < 0:
                    return np.int64(-1)
        else:
            pos = _skip(buf, pos, end, t)
            if pos < 0:
                return np.int64(-1)


@njit(cache=True)
def _snappy(buf, pos, end, out, expected):
    """Decompress the raw SNAPPY stream ``buf[pos:end]`` into ``out[:expected]``; False when corrupt."""
    n, pos = _varint(buf, pos, end)
    if pos < 0 or n != expected or expected > out.shape[0]:
        return False
    o = np.int64(0)
    while pos < end:
        tag = np.int64(buf[pos])
        pos += 1
        kind = tag & 3
        if kind == 0:
            ln = tag >> 2
            if ln >= 60:
                nb = ln - 59
                if pos + nb > end:
                    return False
                ln = np.int64(0)
                for i in range(nb):
                    ln |= np.int64(buf[pos + i]) << (8 * i)
                pos += nb
            ln += 1
            if pos + ln > end or o + ln > expected:
                return False
            out[o:o + ln] = buf[pos:pos + ln]
            pos += ln
            o += ln
        else:
            if kind == 1:
                if pos + 1 > end:
                    return False
                ln = ((tag >> 2) & 7) + 4
                off = ((tag >> 5) << 8) | np.int64(buf[pos])
                pos += 1
            elif kind == 2:
                if pos + 2 > end:
                    return False
                ln = (tag >> 2) + 1
                off = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
                pos += 2
            else:
                if pos + 4 > end:
                    return False
                ln = (tag >> 2) + 1
                off = (np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8) | (np.int64(buf[pos + 2]) << 16)
                       | (np.int64(buf[pos + 3]) << 24))
                pos += 4
            if off == 0 or off > o or o + ln > expected:
                return False
            for i in range(ln):
                out[o + i] = out[o - off + i]
            o += ln
    return o == expected


@njit(cache=True)
def _rle_check(buf, pos, end, bit_width, count, equal_to, below):
    """Decode ``count`` values of an RLE/bit-packed hybrid run sequence in ``buf[pos:end]``.

    Every value must equal ``equal_to`` (when >= 0) and be below ``below`` (when >= 0).
    Returns (0, position after the last run) or (1 = malformed, 2 = value check failed, pos).
    """
    got = np.int64(0)
    byte_width = (bit_width + 7) // 8
    mask = (np.int64(1) << bit_width) - 1
    while got < count:
        hdr, pos = _varint(buf, pos, end)
        if pos < 0:
            return 1, pos
        if hdr & 1:
            groups = hdr >> 1
            nbytes = groups * bit_width
            if groups == 0 or pos + nbytes > end:
                return 1, pos
            take = min(groups * 8, count - got)
            if bit_width > 0 and (equal_to >= 0 or (below >= 0 and below <= mask)):
                lo = equal_to if equal_to >= 0 else 0
                hi = equal_to if equal_to >= 0 else below - 1
                vmin = mask
                vmax = np.int64(0)
                acc = np.int64(0)                      # bits are packed LSB first: stream them through acc
                nbits = 0
                p = pos
                for _ in range(take):
                    while nbits < bit_width:
                        acc |= np.int64(buf[p]) << nbits
                        p += 1
                        nbits += 8
                    v = acc & mask
                    acc >>= bit_width
                    nbits -= bit_width
                    vmin = min(vmin, v)
                    vmax = max(vmax, v)
                if vmin < lo or vmax > hi:
                    return 2, pos
            elif bit_width == 0 and equal_to > 0:
                return 2, pos
            pos += nbytes
            got += take
        else:
            run = hdr >> 1
            if run == 0 or pos + byte_width > end:
                return 1, pos
            v = np.int64(0)
            for b in range(byte_width):
                v |= np.int64(buf[pos + b]) << (8 * b)
            pos += byte_width
            if (equal_to >= 0 and v != equal_to) or (below >= 0 and v >= below):
                return 2, pos
            got += min(run, count - got)
    return 0, pos


@njit(cache=True)
def _bit_width(n):
    w = 0
    while (np.int64(1) << w) <= n:
        w += 1
    return w


@njit(cache=True)
def _check_values(data, pos, end, hdr, max_def, v2, value_bytes, dict_size):
    """Check the levels and values of one decompressed data page ``data[pos:end]``; returns an error code."""
    n = hdr[3]
    if max_def > 0:
        if v2:
            if hdr[8] > 0:
                return 10
            pos += hdr[6]                                # repetition levels come first (none in flat files)
            lvl_end = pos + hdr[5]
        elif hdr[9] == _RLE or hdr[9] == -1:
            if pos + 4 > end:
                return 11
            ln = _le_int(data, pos, 4)
            pos += 4
            lvl_end = pos + ln
        else:
            return 0                                   # deprecated BIT_PACKED levels: not checked
        if lvl_end < pos or lvl_end > end:
            return 11
        code, _ = _rle_check(data, pos, lvl_end, _bit_width(max_def), n, max_def, -1)
        if code == 1:
            return 11
        if code == 2:
            return 10
        pos = lvl_end
    enc = hdr[4]
    if enc == _PLAIN_DICTIONARY or enc == _RLE_DICTIONARY:
        if dict_size < 0:
            return 15
        if pos >= end:
            return 13 if n > 0 else 0
        bw = np.int64(data[pos])
        if bw > 32:
            return 13
        code, _ = _rle_check(data, pos + 1, end, bw, n, -1, dict_size)
        if code == 1:
            return 13
        if code == 2:
            return 12
    elif enc == _PLAIN and value_bytes > 0:
        if end - pos != n * value_bytes:
            return 14
    return 0


@njit(cache=True)
def _walk(buf, data_end, chunks, order, max_def, value_bytes, scratch, pages):
    """Walk every page of every column chunk (in file order ``order``).

    ``pages`` (m, 4) receives [payload offset, compressed size, uncompressed size, chunk] of the pages
    whose codec is checked outside (not SNAPPY/UNCOMPRESSED).  Returns (error code, chunk, byte offset,
    pages walked, outside pages).
    """
    hdr = np.empty(10, np.int64)
    n_pages = np.int64(0)
    n_out = np.int64(0)
    prev_end = np.int64(4)
    for oi in range(order.shape[0]):
        k = order[oi]
        codec = chunks[k, 1]
        data_off = chunks[k, 4]
        dict_off = chunks[k, 5]
        start = dict_off if (dict_off > 0 and dict_off < data_off) else data_off
        stop = start + chunks[k, 3]
        if start < 4 or chunks[k, 3] <= 0 or stop > data_end:
            return 2, k, start, n_pages, n_out
        if start < prev_end:
            return 3, k, start, n_pages, n_out
        prev_end = stop
        pos = start
        values = np.int64(0)
        dict_size = np.int64(-1)
        while pos < stop:
            body = _page_header(buf, pos, stop, hdr)
            if body < 0 or hdr[0] < 0 or hdr[1] < 0 or hdr[2] < 0:
                return 4, k, pos, n_pages, n_out
            page_end = body + hdr[2]
            if page_end > stop:
                return 5, k, pos, n_pages, n_out
            n_pages += 1
            ptype = hdr[0]
            if ptype == _INDEX_PAGE:
                pos = page_end
                continue
            if ptype != _DATA_PAGE and ptype != _DICTIONARY_PAGE and ptype != _DATA_PAGE_V2:
                return 4, k, pos, n_pages, n_out
            if hdr[3] < 0:
                return 4, k, pos, n_pages, n_out
            v2 = ptype == _DATA_PAGE_V2
            levels = (hdr[5] + hdr[6]) if v2 else np.int64(0)
            if v2 and (hdr[5] < 0 or hdr[6] < 0 or levels > hdr[2] or levels > hdr[1]):
                return 4, k, pos, n_pages, n_out
            if ptype == _DICTIONARY_PAGE:
                if dict_size >= 0 or values > 0:
                    return 15, k, pos, n_pages, n_out
                dict_size = hdr[3]
            else:
                values += hdr[3]
            compressed = codec != 0 and (not v2 or hdr[7] != 0)
            if not compressed or codec == 1:
                # SNAPPY or uncompressed: decompress into scratch (levels of a V2 page are never compressed)
                if hdr[1] > scratch.shape[0]:
                    return _ERR_CAPACITY, k, hdr[1], n_pages, n_out
                if levels > 0:
                    scratch[:levels] = buf[body:body + levels]
                if compressed:
                    if not _snappy(buf, body + levels, page_end, scratch[levels:], hdr[1] - levels):
                        return 8, k, pos, n_pages, n_out
                else:
                    if hdr[1] != hdr[2]:
                        return 9, k, pos, n_pages, n_out
                    scratch[levels:hdr[1]] = buf[body + levels:page_end]
                if ptype == _DICTIONARY_PAGE:
                    if (hdr[4] == _PLAIN or hdr[4] == _PLAIN_DICTIONARY) and value_bytes > 0 \
                            and hdr[1] != hdr[3] * value_bytes:
                        return 14, k, pos, n_pages, n_out
                elif max_def >= 0:
                    err = _check_values(scratch, np.int64(0), hdr[1], hdr, max_def, v2, value_bytes, dict_size)
                    if err != 0:
                        return err, k, pos, n_pages, n_out
            else:
                if n_out >= pages.shape[0]:
                    return _ERR_CAPACITY, k, -1, n_pages, n_out
                pages[n_out, 0] = body + levels
                pages[n_out, 1] = hdr[2] - levels
                pages[n_out, 2] = hdr[1] - levels
                pages[n_out, 3] = k
                n_out += 1
            pos = page_end
        if pos != stop:
            return 6, k, pos, n_pages, n_out
        if values != chunks[k, 2]:
            return 7, k, stop, n_pages, n_out
    return 0, np.int64(-1), np.int64(-1), n_pages, n_out


# ---------------------------------------------------------------------------
# Python entry point
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetSummary:
    """What :func:`check_parquet_file` found in a file that passed."""

    num_rows: int
    num_row_groups: int
    num_columns: int
    num_pages: int
    has_statistics: bool
    null_count: int          #: from the statistics (0 when none were written)
    min_value: int | None    #: smallest value per the statistics (None: no statistics or not integer columns)
    max_value: int | None
    seconds: float


def _fail(path: Path, what: str, expected: str = "a valid parquet file (footer, column chunks and pages intact)"):
    raise DataLayoutError(f"{path}: {what}; expected {expected}")


def check_parquet_file(path: str | Path) -> ParquetSummary:
    """Check the footer, column chunks, statistics and every page of a parquet file (see the module docstring).

    Raises
    ------
    DataLayoutError
        One line naming the file, what is damaged (byte offset, row group, column) and what was expected.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        _fail(path, f"cannot be read ({exc.strerror or exc})")
    return _check_cached(path, st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _check_cached(path: Path, size: int, mtime_ns: int, ino: int) -> ParquetSummary:
    t0 = time.perf_counter()
    if size < 12:
        _fail(path, f"file of {size} bytes is too short for a parquet file")
    try:
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        _fail(path, f"cannot be read ({exc})")
    if bytes(buf[:4]) != b"PAR1" or bytes(buf[-4:]) != b"PAR1":
        _fail(path, "no PAR1 magic bytes at its start and end", "a parquet file")
    footer_len = int.from_bytes(bytes(buf[-8:-4]), "little")
    footer_start = size - 8 - footer_len
    if footer_start < 4:
        _fail(path, f"footer length {footer_len} exceeds the file size {size}")
    code, chunks, stats, rg_rows, leaves, n_chunks, n_rg, n_schema, num_rows = _parse_footer(buf, footer_start,
                                                                                             size - 8)
    if code:
        _fail(path, f"footer (bytes {footer_start}..{size - 8}) is not a valid FileMetaData structure")
    if n_chunks and chunks.shape[0] < n_chunks:
        _fail(path, f"footer lists {n_chunks} column chunks for {n_rg} row groups x {n_schema - 1} schema columns",
              "one column chunk per column in every row group")
    chunks, stats = chunks[:n_chunks], stats[:n_chunks]
    n_leaves = n_schema - 1
    nested = n_schema < 1 or bool(np.any(leaves[1:, 2] > 0))
    if num_rows < 0 or n_leaves < 1:
        _fail(path, f"footer declares {num_rows} rows and {n_leaves} columns")
    if n_rg and int(rg_rows.sum()) != num_rows or np.any(rg_rows < 0):
        _fail(path, f"row groups hold {int(rg_rows.sum())} rows but the footer declares {num_rows}",
              "row-group row counts that add up to the file's")
    if n_chunks != n_rg * n_leaves or (n_rg and np.any(np.bincount(chunks[:, 6], minlength=n_rg) != n_leaves)):
        _fail(path, f"{n_chunks} column chunks for {n_rg} row groups x {n_leaves} columns",
              "one column chunk per column in every row group")
    if not nested and n_chunks:
        want = rg_rows[chunks[:, 6]]
        bad = np.flatnonzero(chunks[:, 2] != want)
        if bad.size:
            k = int(bad[0])
            _fail(path, f"row group {chunks[k, 6]} column {chunks[k, 7]} holds {chunks[k, 2]} values",
                  f"{want[k]} (the row group's rows)")
    codecs = set(np.unique(chunks[:, 1]).tolist())
    unknown = codecs - set(_CODEC_NAMES) - {3}
    if unknown or 3 in codecs:
        _fail(path, f"unsupported compression codec {sorted(codecs)}",
              "UNCOMPRESSED, SNAPPY, GZIP, BROTLI, LZ4 or ZSTD")

    # definition levels and value sizes are the same for every column of a signal file; otherwise not checked
    reps = set(leaves[1:, 0].tolist()) if not nested else {-9}
    physical = set(leaves[1:, 1].tolist()) if not nested else {-9}
    max_def = (1 if reps == {1} else 0 if reps == {0} else -1)
    value_bytes = _PHYSICAL_BYTES.get(physical.pop(), 0) if len(physical) == 1 else 0
    if nested or max_def < 0:
        max_def, value_bytes = -1, 0          # levels and values not checked; decompression and page tiling are

    order = np.argsort(np.where((chunks[:, 5] > 0) & (chunks[:, 5] < chunks[:, 4]), chunks[:, 5], chunks[:, 4]),
                       kind="stable")
    scratch_size = 1 << 20
    pages = np.zeros((max(1024, 4 * n_chunks) if codecs - {0, 1} else 0, 4), np.int64)
    while True:
        code, k, offset, n_pages, n_out = _walk(buf, footer_start, chunks, order, max_def, value_bytes,
                                                np.empty(scratch_size, np.uint8), pages)
        if code != _ERR_CAPACITY:
            break
        if offset > 0:
            scratch_size = max(2 * scratch_size, int(offset) + 1)
        else:
            pages = np.zeros((2 * pages.shape[0], 4), np.int64)
    if code:
        g, c = int(chunks[k, 6]), int(chunks[k, 7])
        _fail(path, f"{_ERRORS[code]} at byte {int(offset)} (row group {g}, column {c})")
    for row in range(n_out):
        off, csize, usize, kk = (int(v) for v in pages[row])
        codec = _PYARROW_CODEC[int(chunks[kk, 1])]
        try:
            out = pa.decompress(pa.py_buffer(buf[off:off + csize]), decompressed_size=usize, codec=codec)
            ok = out.size == usize
        except (pa.ArrowException, OSError, ValueError):
            ok = False
        if not ok:
            _fail(path, f"corrupt {codec.upper()} page at byte {off} (row group {int(chunks[kk, 6])}, "
                        f"column {int(chunks[kk, 7])})")
    integer = not nested and leaves.shape[0] > 1 and set(leaves[1:, 1].tolist()) <= {1, 2}  # INT32 / INT64
    has_stats = bool(n_chunks) and bool(np.all(stats[:, 3] == 1) and np.all(stats[:, 4] == 1))
    null_count = int(stats[stats[:, 0] > 0, 0].sum()) if n_chunks else 0
    summary = ParquetSummary(
        num_rows=int(num_rows), num_row_groups=int(n_rg), num_columns=int(n_leaves), num_pages=int(n_pages),
        has_statistics=has_stats, null_count=null_count,
        min_value=int(stats[:, 1].min()) if has_stats and integer else None,
        max_value=int(stats[:, 2].max()) if has_stats and integer else None,
        seconds=time.perf_counter() - t0,
    )
    del buf
    log.debug("parquet check %s: %d row groups, %d pages, %.3f s", path, n_rg, n_pages, summary.seconds)
    return summary
