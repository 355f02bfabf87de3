"""Hadamard matrices of the widths a model has: Sylvester (scipy) times a Paley construction.

A width n is written n = 2^k * m with m = 1 or m a Paley order: q + 1 for a prime
q = 3 (mod 4) (Paley I) or 2(q + 1) for a prime q = 1 (mod 4) (Paley II); the matrix is
the Kronecker product of scipy's Sylvester H_(2^k) (scipy has no other orders) and the
Paley matrix, the Paley factor at most MAX_PALEY wide (its q x q table is built in memory).
This covers every power of two and many others (352 = 8 x 44, 1536 = 128 x 12,
14336 = 1024 x 14 is not: 14 = 2(6 + 1) needs q = 6, not a prime; 14336 = 512 x 28 is);
a width it does not cover, or one with no Hadamard matrix at all (not a multiple of 4 past 2),
is refused with HadamardWidthError naming the width, before any work.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg

from softpick_bench.errors import UnsupportedQuantError


class HadamardWidthError(UnsupportedQuantError):
    """No Hadamard matrix of this width is constructed here."""


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, math.isqrt(q) + 1))


def _jacobsthal(q: int) -> np.ndarray:
    """Q[i, j] = Legendre symbol of (j - i) mod q."""
    residues = np.zeros(q, dtype=np.int64)
    residues[(np.arange(1, q) ** 2) % q] = 1
    chi = np.where(residues == 1, 1, -1)
    chi[0] = 0
    idx = (np.arange(q)[None, :] - np.arange(q)[:, None]) % q
    return chi[idx]


def _paley(m: int) -> np.ndarray | None:
    """A Hadamard matrix of order m by Paley I or II (prime q only), or None."""
    q = m - 1
    if q >= 3 and q % 4 == 3 and _is_prime(q):
        s = np.zeros((m, m), dtype=np.int64)
        s[0, 1:] = 1
        s[1:, 0] = -1
        s[1:, 1:] = _jacobsthal(q)
        return s + np.eye(m, dtype=np.int64)
    if m % 2 == 0:
        q = m // 2 - 1
        if q >= 5 and q % 4 == 1 and _is_prime(q):
            c = np.zeros((q + 1, q + 1), dtype=np.int64)
            c[0, 1:] = 1
            c[1:, 0] = 1
            c[1:, 1:] = _jacobsthal(q)
            eye = np.eye(q + 1, dtype=np.int64)
            return np.kron(c, np.array([[1, 1], [1, -1]])) + np.kron(eye, np.array([[1, -1], [-1, -1]]))
    return None


MAX_PALEY = 4096


@functools.lru_cache(maxsize=16)
def _hadamard(n: int) -> np.ndarray:
    if n < 1:
        raise HadamardWidthError(f"no Hadamard matrix of width {n}")
    k = 0
    while n % (2 ** (k + 1)) == 0:
        k += 1
    for j in range(k, -1, -1):  # the largest power of two whose cofactor is a Paley order
        m = n // 2**j
        if m > MAX_PALEY:
            break
        base = np.ones((1, 1), dtype=np.int64) if m == 1 else _paley(m)
        if base is not None:
            return np.kron(scipy.linalg.hadamard(2**j, dtype=np.int64), base)
    raise HadamardWidthError(
        f"no Hadamard matrix of width {n} is constructed here (n = 2^k * m needs m = 1, q + 1 with a prime "
        f"q = 3 mod 4, or 2(q + 1) with a prime q = 1 mod 4, m <= {MAX_PALEY}); "
        "widths like 128, 352 (8 x 44), 1536 (128 x 12) work"
    )


def hadamard(n: int) -> np.ndarray:
    """The n x n orthonormal Hadamard matrix H / sqrt(n) (float64): H H^T = I."""
    return _hadamard(n) / np.sqrt(n)


def check_width(n: int) -> None:
    """Raise HadamardWidthError if width n has no construction."""
    _hadamard(n)
