"""Streamed detector stages: ADC -> dark -> flat chained in memory into CDS when their planes are not kept.

The streamed chain must compute exactly what the stored chain computes (same
CDS planes, metrics, light curves and spectrum), cache as one unit, stop on
an ``error`` gate of a streamed stage without committing anything of the
group, and never read a frame it already let go.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from calib_core.chain import run_chain
from calib_core.config import compose_config
from calib_core.frames import ChunkBuffers, Frames, FrameAxisMeta, StreamedSource
from calib_core.store import load_output
from calib_core.stages import QCError
from calib_core.stages.base import FrameStream

STREAM = [f"calib.{s}.cache.write_intermediate=false" for s in ("adc", "dark", "flat")]
#: every detector plane stored in calib/ (nominal keeps none: ADC -> flat stream, CDS planes are released)
STORED = [f"calib.{s}.cache.write_intermediate=true" for s in ("adc", "dark", "flat", "cds")]
DETECTOR_ONLY = ["calib.trace.enabled=false", "calib.phase.enabled=false", "calib.depths.enabled=false",
                 "calib.top_level_calib.enabled=false"]


def _run(root, run_dir, *overrides, profile="calib/nominal"):
    """A run with every plane stored unless ``overrides`` say otherwise (later overrides win)."""
    return run_chain(compose_config(profile, [f"data.root={root}", f"run_dir={run_dir}", *STORED, *overrides]))


def _metrics_without_times(rec):
    return json.loads(json.dumps(rec.metrics, default=lambda o: np.asarray(o).tolist()))


@pytest.fixture(scope="module")
def stored_and_streamed(detector_demo, tmp_path_factory):
    """The detector chain + photometry on a planet with dropped pairs, 16-frame chunks: stored vs streamed."""
    common = [*DETECTOR_ONLY, "runtime.chunk_frames=16"]
    stored = _run(detector_demo, tmp_path_factory.mktemp("stored"), *common)
    streamed = _run(detector_demo, tmp_path_factory.mktemp("streamed"), *common, *STREAM)
    return stored, streamed


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_streamed_chain_equals_the_stored_chain(stored_and_streamed, inst):
    stored, streamed = stored_and_streamed
    assert stored.status == streamed.status == "ok"
    for field in ("data", "var", "dq", "frame_flux", "pair_index"):
        a, b = stored.output("cds", inst).fields[field], streamed.output("cds", inst).fields[field]
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"cds/{field}")
    for field in ("photometry_flux", "photometry_flux_var"):
        np.testing.assert_array_equal(np.asarray(stored.output("photometry", inst).fields[field]),
                                      np.asarray(streamed.output("photometry", inst).fields[field]))
    for stage in ("adc", "dark", "flat", "cds", "photometry"):
        assert _metrics_without_times(streamed.record(stage, inst)) == _metrics_without_times(
            stored.record(stage, inst)), stage
    assert streamed.record("cds", inst).metrics["n_unpaired"] > 0       # the dropped pairs were seen
    titles = [p.title for p in stored.diagnostics("cds", inst)]
    assert titles and [p.title for p in streamed.diagnostics("cds", inst)] == titles


@pytest.mark.parametrize("stage", ["adc", "dark", "flat"])
def test_streamed_stages_keep_metrics_and_a_preview_frame_but_no_planes(stored_and_streamed, stage):
    stored, streamed = stored_and_streamed
    inst = "AIRS-CH0"
    rec = streamed.record(stage, inst)
    assert rec.status == "ran" and "streamed into" in rec.reason
    out = streamed.output(stage, inst)
    assert not {"data", "var", "dq"} & set(out.fields)
    assert not (streamed.run_dir / "calib" / stage).exists()          # write_intermediate: false
    assert out.meta["streamed_into"] == "cds"          # the stage whose output stores the frames
    index = out.meta["preview_index"]
    np.testing.assert_array_equal(out.fields["preview"][0], stored.output(stage, inst).fields["data"][index])
    image = [p for p in streamed.diagnostics(stage, inst) if p.kind == "image" and "frame" in p.title]
    assert image and "streamed" in image[0].title
    np.testing.assert_array_equal(image[0].data, out.fields["preview"][0])


def test_streamed_group_caches_as_one_unit(detector_demo, tmp_path):
    args = [*DETECTOR_ONLY, "calib.photometry.enabled=false", "data.instruments=[FGS1]", *STREAM]
    first = _run(detector_demo, tmp_path, *args)
    assert [r.status for r in first.records] == ["ran"] * 4
    again = _run(detector_demo, tmp_path, *args)
    assert [r.status for r in again.records] == ["cached"] * 4
    np.testing.assert_array_equal(np.asarray(again.output("cds", "FGS1").fields["data"]),
                                  np.asarray(first.output("cds", "FGS1").fields["data"]))
    changed = _run(detector_demo, tmp_path, *args, "calib.dark.hot_pixels.sigma=3.0")
    assert [(r.stage, r.status) for r in changed.records] == [("adc", "ran"), ("dark", "ran"), ("flat", "ran"),
                                                              ("cds", "ran")]
    assert changed.record("dark", "FGS1").metrics["n_hot"] > first.record("dark", "FGS1").metrics["n_hot"]


def test_error_gate_of_a_streamed_stage_commits_nothing_of_the_group(detector_demo, tmp_path):
    args = [*DETECTOR_ONLY, "calib.photometry.enabled=false", "data.instruments=[AIRS-CH0]", *STREAM,
            "calib.adc.quality_checks.max_dropped_frame_frac=0.0", "calib.adc.quality_checks.action_on_fail=error"]
    with pytest.raises(QCError, match=r"QC gate 'dropped_frames' of stage 'adc' \(AIRS-CH0\) failed"):
        _run(detector_demo, tmp_path, *args)
    assert not (tmp_path / "calib" / "cds" / "AIRS-CH0").exists()
    assert not any(p.name == "meta.json" for p in tmp_path.rglob("*"))        # no stage output committed
    qc = json.loads((tmp_path / "qc.json").read_text())
    assert qc["status"] == "failed" and qc["stages"]["adc"]["AIRS-CH0"]["status"] == "failed"


def test_reference_pixel_adc_is_stored_and_the_rest_streams(detector_demo, tmp_path):
    """The two-pass ADC (reference pixels) cannot stream: it is stored (in scratch) and dark -> flat stream from it.

    Its planes are released once the group reading them (dark -> flat -> CDS) committed.
    """
    args = [*DETECTOR_ONLY, "calib.photometry.enabled=false", "data.instruments=[FGS1]", *STREAM,
            "calib.adc.reference_pixel.use=true"]
    streamed = _run(detector_demo, tmp_path / "a", *args)
    stored = _run(detector_demo, tmp_path / "b", *args[:-4], "calib.adc.reference_pixel.use=true")
    assert streamed.record("adc", "FGS1").reason == ""
    adc = streamed.output("adc", "FGS1")          # stored in scratch, its planes released once CDS committed
    assert ".scratch" in str(adc.path) and adc.meta["planes_released"] and "data" not in adc.fields
    assert "streamed into 'cds'" in streamed.record("dark", "FGS1").reason
    np.testing.assert_array_equal(np.asarray(streamed.output("cds", "FGS1").fields["data"]),
                                  np.asarray(stored.output("cds", "FGS1").fields["data"]))


class _Double(FrameStream):
    """A toy stream: doubles the data of 5-frame chunks of a known cube."""

    def __init__(self, n):
        self.n_frames, self.frame_shape = n, (2, 3)
        self.axis = FrameAxisMeta(np.arange(n, dtype=float), np.ones(n), np.ones(n, np.int8))
        self.read_var, self.wavelength_um = np.zeros((2, 3), np.float32), None

    def process(self, chunk):
        return Frames(chunk.data * 2, chunk.var, chunk.dq, chunk.axis, chunk.start)

    def finish(self, writer):
        return {}


def _source(n=23, preview=None, prefetch=False, stream=None):
    cube = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
    axis = FrameAxisMeta(np.arange(n, dtype=float), np.ones(n), np.ones(n, np.int8))
    chunks = (Frames(cube[a:a + 5].copy(), np.ones((min(5, n - a), 2, 3), np.float32),
                     np.zeros((min(5, n - a), 2, 3), np.uint16), axis.take(slice(a, a + 5)), a)
              for a in range(0, n, 5))
    return cube, StreamedSource(stream or _Double(n), chunks, preview_index=preview, prefetch=prefetch)


class _FailsAt(_Double):
    """Doubles, and fails on the chunk holding frame 12 (like a stage refusing bad input)."""

    def __init__(self, n):
        super().__init__(n)
        self.seen = []

    def process(self, chunk):
        if chunk.start <= 12 < chunk.start + len(chunk):
            raise ValueError("dark: non-finite input at frame 12")
        self.seen.append(chunk.start)
        return super().process(chunk)


@pytest.mark.parametrize("prefetch", [False, True])
def test_streamed_source_serves_frames_in_order_and_refuses_discarded_ones(prefetch):
    cube, src = _source(preview=12, prefetch=prefetch)
    assert src.frame_shape == (2, 3) and src.n_frames == 23
    np.testing.assert_array_equal(src.take(np.array([3, 9, 4])).data, 2 * cube[[3, 9, 4]])   # across chunks
    np.testing.assert_array_equal(src.read(8, 14).data, 2 * cube[8:14])
    idx = np.array([17, 8, 9, 16, 10])                                                  # held in three chunks
    blocks, block, row = src.frame_blocks(idx)
    assert len(set(block.tolist())) == 3
    got = np.stack([blocks[b][0][r] for b, r in zip(block, row)]).reshape(len(idx), 2, 3)
    np.testing.assert_array_equal(got, 2 * cube[idx])
    src.discard_before(10)
    with pytest.raises(RuntimeError, match="frame 9 was already discarded"):
        src.frame_blocks(np.array([9, 11]))
    with pytest.raises(RuntimeError, match="frame 9 was already discarded"):
        src.take(np.array([9, 11]))
    with pytest.raises(IndexError):
        src.take(np.array([23]))
    np.testing.assert_array_equal(src.take(np.array([22])).data, 2 * cube[[22]])
    np.testing.assert_array_equal(src.preview, 2 * cube[12:13])
    assert not src.dropped_mask().any()


def test_streamed_source_iterates_once_and_counts_dropped_frames():
    cube, src = _source(n=12)
    got = np.concatenate([c.data for c in src.iter_chunks(5)])
    np.testing.assert_array_equal(got, 2 * cube)
    assert list(src.iter_chunks(5)) == []                                     # one pass only
    dq = np.zeros((4, 2, 3), np.uint16)
    dq[1] = 1 << 15
    axis = FrameAxisMeta(np.arange(4.0), np.ones(4), np.ones(4, np.int8))
    from calib_core.dq import DQ
    dq[1] = int(DQ.DROPPED)
    src = StreamedSource(_Double(4), iter([Frames(np.zeros((4, 2, 3), np.float32), np.zeros((4, 2, 3), np.float32),
                                                  dq, axis, 0)]))
    np.testing.assert_array_equal(src.dropped_mask(), [False, True, False, False])


def test_prefetched_source_raises_the_stream_error_at_its_chunk():
    _, src = _source(stream=_FailsAt(23), prefetch=True)           # computed in a background thread
    np.testing.assert_array_equal(src.read(0, 10).data[:, 0, 0], 2 * np.arange(0, 60, 6))
    with pytest.raises(ValueError, match="frame 12"):
        src.read(10, 15)
    assert src.stream.seen == [0, 5]                                # nothing past the failing chunk was computed


class _Pooled(_Double):
    """Doubles into planes lent by a :class:`ChunkBuffers` (as the ADC does), checking none is lent twice."""

    def __init__(self, n):
        super().__init__(n)
        self.buffers = ChunkBuffers(keep=2)
        self.in_use = []

    def process(self, chunk):
        data, var, dq = self.buffers.take(len(chunk), self.frame_shape, np.uint16)
        for held in self.in_use:
            assert not np.shares_memory(held, data), "a plane was lent again while its chunk was still held"
        np.multiply(chunk.data, 2, out=data)
        var[:], dq[:] = chunk.var, chunk.dq
        return Frames(data, var, dq, chunk.axis, chunk.start)


@pytest.mark.parametrize("prefetch", [False, True])
def test_chunk_planes_are_reused_only_after_the_reader_discards_them(prefetch):
    """Like CDS: read pairs of frames, discard behind; every value is right and planes come back for reuse.

    A plane lent again while its chunk is held would be overwritten by the producer: the values read
    afterwards would be wrong (with the producer ahead in a thread), or the lending is caught (without).
    """
    stream = _Pooled(43)
    cube, src = _source(n=43, stream=stream, prefetch=prefetch)
    src._buffers = stream.buffers
    for t in range(0, 43, 2):
        idx = np.array([t, min(t + 1, 42)])
        blocks, block, row = src.frame_blocks(idx)
        got = np.stack([blocks[b][0][r] for b, r in zip(block, row)]).reshape(len(idx), 2, 3)
        np.testing.assert_array_equal(got, 2 * cube[idx])
        src.discard_before(t + 2)
        if not prefetch:        # ahead in a thread, the producer may lend a plane between these two lines
            stream.in_use = [c.data for c in src._buf]
    src.exhaust()
    assert stream.buffers.n_reused > 0 and stream.buffers.n_allocated <= 4


def test_chunk_buffers_take_back_only_what_they_lent():
    pool = ChunkBuffers(keep=1)
    a = pool.take(4, (2, 3), np.uint16)
    axis = FrameAxisMeta(np.arange(4.0), np.ones(4), np.ones(4, np.int8))
    foreign = Frames(np.zeros((4, 2, 3), np.float32), a[1], a[2], axis, 0)
    assert not pool.give_back(foreign)                       # not the triple it lent
    assert pool.give_back(Frames(*a, axis, 0))
    assert not pool.give_back(Frames(*a, axis, 0))           # given back once only
    b = pool.take(3, (2, 3), np.uint16)                     # a smaller chunk reuses the larger planes
    assert np.shares_memory(a[0], b[0]) and b[0].shape == (3, 2, 3) and pool.n_reused == 1
    c = pool.take(3, (2, 3), np.uint16)                     # b is still lent: new planes
    assert not np.shares_memory(b[0], c[0]) and pool.n_allocated == 2
    assert pool.take(2, (5, 3), np.uint16)[0].shape == (2, 5, 3)   # another frame shape: never a wrong view


def test_in_order_threads_give_the_plain_loop_and_raise_at_the_item():
    import threading
    import time

    from calib_core.prefetch import in_order_threads

    started = []

    def work(a, b):
        started.append(a)
        time.sleep(0.002 * ((a * 7) % 5))          # finish out of order
        if a == 12:
            raise ValueError("photometry: non-finite input in samples 12:13")
        return a * b, threading.current_thread().name

    items = [(a, a + 1) for a in range(10)]
    got = list(in_order_threads(work, iter(items), 2))
    assert [args for args, _ in got] == items and [r[0] for _, r in got] == [a * b for a, b in items]
    assert any(r[1].startswith("in-order") for _, r in got)
    assert [r[0] for _, r in in_order_threads(work, iter(items), 1)] == [a * b for a, b in items]
    started.clear()
    seen = []
    with pytest.raises(ValueError, match="samples 12:13"):
        for args, _ in in_order_threads(work, iter((a, 1) for a in range(10, 40)), 2):
            seen.append(args[0])
    assert seen == [10, 11] and max(started) <= 14          # no call started long after the failing one
