"""The on-disk stage store: frame planes written by pwrite, atomic commit, discard on failure."""

from __future__ import annotations

import numpy as np
import pytest

import json

from calib_core.store import FramePlane, StoreWriter, atomic_write_json, load_output, release_pages


def test_frame_plane_matches_an_in_memory_array(tmp_path):
    rng = np.random.default_rng(3)
    shape = (10, 4, 5)
    ref = np.zeros(shape, np.float32)
    plane = FramePlane(tmp_path / "p.npy", shape, np.float32)
    assert len(plane) == 10 and plane.shape == shape and plane.dtype == np.float32
    chunk = rng.normal(size=(3, 4, 5)).astype(np.float32)
    plane[2:5] = chunk                                   # pwrite path
    ref[2:5] = chunk
    plane[7:8] = 1.5                                     # broadcast scalar through pwrite
    ref[7:8] = 1.5
    plane[6:6] = np.empty((0, 4, 5), np.float32)         # empty slice: nothing written
    np.testing.assert_array_equal(plane[:], ref)          # read map sees the pwrites
    idx = (np.array([2, 9]), np.array([0, 3]), np.array([1, 4]))
    plane[idx] = np.array([-7.0, 8.0], np.float32)        # scatter write through the map
    ref[idx] = [-7.0, 8.0]
    plane[3:4] = np.full((1, 4, 5), 2.0, np.float32)      # pwrite after the map was opened
    ref[3:4] = 2.0
    np.testing.assert_array_equal(plane[3], ref[3])
    buf = np.full((4, 4, 5), np.nan, np.float32)
    np.testing.assert_array_equal(plane.read_into(2, buf), ref[2:6])       # pread: pwrites and map writes seen
    with pytest.raises(ValueError, match="cannot read frames 8:12"):
        plane.read_into(8, buf)
    with pytest.raises(ValueError, match="into"):
        plane.read_into(0, np.empty((2, 4, 5), np.float64))
    release_pages(plane, frames=slice(0, 5))              # drops resident pages, keeps the data
    np.testing.assert_array_equal(np.asarray(plane), ref)
    plane.close()
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), ref)   # a plain .npy, untouched frames zero


def test_frame_plane_converts_dtype_and_rejects_wrong_shapes(tmp_path):
    plane = FramePlane(tmp_path / "q.npy", (4, 2, 2), np.uint16)
    plane[0:2] = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], np.int64)
    with pytest.raises(ValueError):
        plane[2:4] = np.zeros((3, 2, 2), np.uint16)       # 3 frames into a 2-frame slice
    plane.close()
    out = np.load(tmp_path / "q.npy")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[:2].ravel(), np.arange(1, 9))
    np.testing.assert_array_equal(out[2:], 0)


def test_store_writer_commits_planes_atomically_or_discards_them(tmp_path):
    final = tmp_path / "calib" / "flat" / "FGS1"
    with StoreWriter(final) as w:
        data, var, dq = w.create_frames(6, (3, 3))
        data[0:6] = np.arange(54, dtype=np.float32).reshape(6, 3, 3)
        var[0:6] = 1.0
        dq[5:6] = 4
        assert load_output(final) is None                 # nothing visible before commit
        out = w.commit({"stage": "flat"})
    assert out.meta["fields"]["data"] == {"shape": [6, 3, 3], "dtype": "float32", "unit": "electron"}
    np.testing.assert_array_equal(out.fields["data"].ravel(), np.arange(54))
    assert int(out.fields["dq"][5].sum()) == 36 and int(out.fields["dq"][:5].sum()) == 0
    with StoreWriter(final) as w:                         # a failed rewrite leaves the old output intact
        w.create_frames(6, (3, 3))[0][0:1] = 99.0
    again = load_output(final)
    assert again is not None and float(again.fields["data"][0, 0, 0]) == 0.0
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".")]


def test_frame_plane_without_pwrite_writes_through_the_map(tmp_path, monkeypatch):
    """Platforms without os.pwrite (Windows) get the same file through the memory map."""
    import os

    monkeypatch.delattr(os, "pwrite")
    plane = FramePlane(tmp_path / "w.npy", (5, 2, 2), np.float32)
    plane[1:3] = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    plane.close()
    out = np.load(tmp_path / "w.npy")
    np.testing.assert_array_equal(out[1:3].ravel(), np.arange(8))
    assert not out[0].any() and not out[3:].any()


def test_dropped_frames_needs_every_pixel_dropped():
    """The first-pixel screen never changes the answer: every pixel must carry DROPPED."""
    from calib_core.dq import DQ, dropped_frames

    rng = np.random.default_rng(0)
    dq = rng.integers(0, 1 << 12, size=(50, 4, 5)).astype(np.uint16)
    dq[[3, 7, 9]] = int(DQ.DROPPED)
    dq[9, 2, 2] = 0                        # first pixel dropped, one other pixel not
    dq[11, 1:] = int(DQ.DROPPED)           # every pixel but the first
    expected = ((dq & int(DQ.DROPPED)) != 0).reshape(50, -1).all(axis=1)
    np.testing.assert_array_equal(dropped_frames(dq), expected)
    assert np.flatnonzero(expected).tolist() == [3, 7]
    assert dropped_frames(np.zeros((0, 2, 2), np.uint16)).size == 0


def test_json_round_trips_numpy_values_and_nan(tmp_path):
    obj = {"time": np.arange(5) * 0.1, "kind": np.zeros(3, np.int8), "n": np.int64(7), "x": float("nan"),
           "nested": {"rows": [[1, 2]] * 3}, "path": tmp_path}
    atomic_write_json(tmp_path / "a.json", obj)
    back = json.loads((tmp_path / "a.json").read_text())
    assert back["time"] == (np.arange(5) * 0.1).tolist() and back["kind"] == [0, 0, 0] and back["n"] == 7
    assert np.isnan(back["x"]) and back["nested"]["rows"] == [[1, 2]] * 3 and back["path"] == str(tmp_path)
    assert not list(tmp_path.glob(".*tmp"))                       # the temporary file was renamed into place
