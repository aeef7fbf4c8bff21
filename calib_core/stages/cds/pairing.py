"""Which first read each signal read is differenced with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ...frames import FrameAxisMeta
    from .config import PairingConfig

__all__ = ["PairPlan", "pair_reads", "plan_pairs"]


def pair_reads(time_s: np.ndarray, read_kind: np.ndarray, *, order_by: str = "index", policy: str = "n_minus_1",
               window_s: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Find the first read of every signal read.

    Parameters
    ----------
    time_s : ndarray, shape (n,)
        Read times (s).
    read_kind : ndarray of int, shape (n,)
        0 first read after a reset, 1 signal read.
    order_by : {"index", "timestamp"}
        Order in which "previous"/"earlier" is meant.
    policy : {"n_minus_1", "nearest"}
        ``n_minus_1``: the read just before, if it is a first read; ``nearest``:
        the latest earlier first read with ``0 <= t_signal - t_first <= window_s``,
        each first read used by at most one signal read (the closest).
    window_s : float
        Time window of ``nearest`` (s).

    Returns
    -------
    signal_idx : ndarray of int64, shape (m,)
        Frame index of every signal read, in the chosen order.
    first_idx : ndarray of int64, shape (m,)
        Frame index of its first read, or -1 when it has none.
    """
    time_s = np.asarray(time_s, np.float64)
    kinds = np.asarray(read_kind)
    n = len(kinds)
    order = np.arange(n) if order_by == "index" else np.argsort(time_s, kind="stable")
    k, t = kinds[order], time_s[order]
    pos_sig = np.flatnonzero(k == 1)
    if policy == "n_minus_1":
        prev = pos_sig - 1
        ok = (prev >= 0) & (k[np.maximum(prev, 0)] == 0)
        partner = np.where(ok, prev, 0)
    else:
        pos_first = np.flatnonzero(k == 0)
        j = np.searchsorted(pos_first, pos_sig) - 1
        ok = j >= 0
        partner = pos_first[np.maximum(j, 0)] if pos_first.size else np.zeros_like(pos_sig)
        gap = t[pos_sig] - t[partner]
        ok &= (gap >= 0) & (gap <= window_s)
        claimed = np.flatnonzero(ok)
        _, first_claim = np.unique(partner[claimed], return_index=True)
        ok[:] = False
        ok[claimed[first_claim]] = True
    signal_idx = order[pos_sig].astype(np.int64)
    first_idx = np.where(ok, order[partner], -1).astype(np.int64)
    return signal_idx, first_idx


@dataclass
class PairPlan:
    """Pairing of the whole visit."""

    signal_idx: np.ndarray      #: (m,) signal-read index of each output frame
    first_idx: np.ndarray       #: (m,) first-read index, -1 when unpaired
    orphans: np.ndarray         #: first reads used by no pair


def plan_pairs(axis: "FrameAxisMeta", cfg: "PairingConfig") -> PairPlan:
    """Pair every signal read of a visit with its first read (:func:`pair_reads`); list the orphaned first reads."""
    signal_idx, first_idx = pair_reads(axis.time_s, axis.read_kind, order_by=cfg.order_by, policy=cfg.policy,
                                       window_s=cfg.window_s)
    firsts = np.flatnonzero(np.asarray(axis.read_kind) == 0)
    orphans = np.setdiff1d(firsts, first_idx[first_idx >= 0])
    return PairPlan(signal_idx, first_idx, orphans)
