"""Scalar helpers shared by the beam-search kernels: post-processor transform/combine and top-k insertion.

Post-processor codes follow ``xmr.postprocess.postprocessor_code`` (0 noop, 1 sigmoid, 2-5 l1..l4-hinge,
6 log-sigmoid, 7-10 log-l1..l4-hinge).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@njit(cache=True, nogil=True, inline="always")
def hinge_power(h, p):
    """h**p for p in 1..4 by multiplication (pow is several times slower)."""
    if p == 1:
        return h
    if p == 2:
        return h * h
    if p == 3:
        return h * h * h
    h2 = h * h
    return h2 * h2


@njit(cache=True, nogil=True, inline="always")
def transform_score(code, s):
    """Post-processor transform of one raw score (float64 math, float32 result). O(1)."""
    s = np.float64(s)
    if code == 0:
        r = s
    elif code == 1:
        r = 1.0 / (1.0 + math.exp(-s)) if s > -700.0 else 0.0
    elif code <= 5:
        h = 1.0 - s
        r = math.exp(-hinge_power(h, code - 1)) if h > 0.0 else 1.0
    elif code == 6:
        r = min(s, 0.0) - math.log1p(math.exp(-abs(s)))
    else:
        h = 1.0 - s
        r = -hinge_power(h, code - 6) if h > 0.0 else 0.0
    return np.float32(r)


@njit(cache=True, nogil=True, inline="always")
def combine_score(code, parent, child):
    """Combine a parent path score with a transformed child score (noop keeps the child). O(1)."""
    if code == 0:
        return child
    if code <= 5:
        return np.float32(parent * child)
    return np.float32(parent + child)


@njit(cache=True, nogil=True, inline="always")
def insert_topk(ids, sc, m, k, j, v):
    """Insert candidate (j, v) into the descending list ids/sc of length m <= k; returns the new length.

    Candidates arrive in candidate order, and an equal score never passes an earlier one, so the list is
    the stable sort by descending score (ties -> earlier candidate). O(k) worst case, O(1) when rejected.
    """
    if m == k:
        if not v > sc[k - 1]:
            return m
        i = k - 1
    else:
        i = m
        m += 1
    while i > 0 and sc[i - 1] < v:
        sc[i] = sc[i - 1]
        ids[i] = ids[i - 1]
        i -= 1
    sc[i] = v
    ids[i] = j
    return m


@intrinsic
def prefetch(typingctx, arr, idx):
    """Software prefetch of ``arr[idx]`` into all cache levels (llvm.prefetch; a hint, never faults)."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read access, high temporal locality, data cache
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def prefetch_lines(arr, lo, hi):
    """Prefetch every 64-byte line of the 4-byte items arr[lo:hi] (arr's base 64-byte aligned). O(lines)."""
    for i in range(lo & ~15, hi, 16):
        prefetch(arr, i)
