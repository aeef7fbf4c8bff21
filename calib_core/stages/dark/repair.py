"""Which neighbours repair a bad pixel: the 8-neighbour table the dark kernel takes its medians from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NeighbourTable", "neighbour_table"]


@dataclass
class NeighbourTable:
    """The 8-neighbours of a set of pixels to repair."""

    rows: np.ndarray        #: (k,) row of each pixel to repair
    cols: np.ndarray        #: (k,) column of each pixel to repair
    nbr_rows: np.ndarray    #: (k, 8) neighbour rows (clipped into the frame)
    nbr_cols: np.ndarray    #: (k, 8) neighbour columns (clipped into the frame)
    valid: np.ndarray       #: (k, 8) neighbour inside the frame and statically usable

    def __len__(self) -> int:
        return len(self.rows)


def neighbour_table(bad: np.ndarray, usable: np.ndarray) -> NeighbourTable:
    """Neighbour indices of every ``bad`` pixel, valid where inside the frame and ``usable``.

    Parameters
    ----------
    bad : ndarray of bool, shape (H, W)
        Pixels to repair.
    usable : ndarray of bool, shape (H, W)
        Pixels allowed as donors (e.g. neither hot nor dead).
    """
    h, w = bad.shape
    rows, cols = np.nonzero(bad)
    dr, dc = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
    keep = (dr != 0) | (dc != 0)
    nr = rows[:, None] + dr[keep][None, :]
    nc = cols[:, None] + dc[keep][None, :]
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    nr, nc = np.clip(nr, 0, h - 1), np.clip(nc, 0, w - 1)
    return NeighbourTable(rows, cols, nr, nc, inside & usable[nr, nc])
