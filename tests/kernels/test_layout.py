"""The Cython layout adapts against NumPy's transpose, and their refusal of bad shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench._kernels import layout

dims = st.integers(1, 37)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 3), c=dims, h=dims, w=dims, threads=st.sampled_from([0, 1, 2]))
def test_round_trip_matches_numpy(n, c, h, w, threads):
    x = np.random.default_rng(n * 1000 + c).standard_normal((n, c, h, w)).astype(np.float32)
    y = layout.nchw_to_nhwc(x, num_threads=threads)
    np.testing.assert_array_equal(y, x.transpose(0, 2, 3, 1))
    z = layout.nhwc_to_nchw(y, num_threads=threads)
    np.testing.assert_array_equal(z, x)


def test_writes_into_given_buffer():
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    out = np.full((2, 5, 7, 3), -1, np.float32)
    assert layout.nchw_to_nhwc(x, out) is out
    np.testing.assert_array_equal(out, x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("src, dst, message", [
    (np.zeros((2, 3, 4, 5), np.float32), np.zeros((2, 4, 5, 4), np.float32), "needs destination"),
    (np.zeros((2, 3, 4), np.float32), None, "4-D"),
    (np.zeros((2, 3, 4, 5), np.float64), None, "float32"),
    (np.zeros((2, 3, 4, 5), np.float32)[:, :, :, ::2], None, "contiguous"),
    (np.zeros((2, 3, 4, 5), np.float32), np.zeros((2, 4, 5, 3), np.float32)[::-1], "contiguous"),
    (np.zeros((2, 3, 4, 5), np.float32), [[0.0]], "NumPy array"),
])
def test_bad_shapes_raise_instead_of_crashing(src, dst, message):
    with pytest.raises((ValueError, TypeError), match=message):
        layout.nchw_to_nhwc(src, dst)


@pytest.mark.parametrize("isa", [None, "avx2", "avx512"])
@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (2, 3, 67, 45), (1, 3, 1, 5)])
def test_three_channel_inputs_interleave_in_every_build(isa, shape):
    """An RGB input to NHWC takes its own interleaving path, in each ISA build of the kernel."""
    from workbench.runtime import cpu
    mod = cpu.kernel_module("layout", isa)
    if mod is None:
        pytest.skip(f"this CPU cannot run the {isa} build")
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    x.flat[::97] = np.nan
    for threads in (1, 2):
        y = mod.nchw_to_nhwc(x, num_threads=threads)
        np.testing.assert_array_equal(y, x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("isa", [None, "avx2", "avx512"])
@settings(max_examples=20, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       before=st.integers(0, 5), after=st.integers(0, 5), threads=st.sampled_from([1, 2]))
def test_nhwc_to_nchw_writes_planes_apart(isa, n, c, h, w, before, after, threads):
    """The (H, W) planes of an NCHW view into a wider (N, C, L) buffer (a detector head's Concat
    along its flattened spatial axis): every plane in its place, nothing around it touched."""
    from workbench.runtime import cpu
    k = cpu.kernel_module("layout", isa)
    if k is None:
        pytest.skip(f"no {isa} build of the layout kernel on this CPU")
    x = np.random.default_rng(c * 100 + h).standard_normal((n, h, w, c)).astype(np.float32)
    whole = np.full((n, c, before + h * w + after), -7, np.float32)
    dst = whole[:, :, before:before + h * w].reshape(n, c, h, w)
    assert dst.flags.c_contiguous == (before + after == 0 or c == 1 and n == 1)
    assert k.nhwc_to_nchw(x, dst, threads) is dst
    np.testing.assert_array_equal(whole[:, :, before:before + h * w], x.transpose(0, 3, 1, 2).reshape(n, c, h * w))
    assert (whole[:, :, :before] == -7).all() and (whole[:, :, before + h * w:] == -7).all()


@pytest.mark.parametrize("dst", [
    np.zeros((2, 3, 20), np.float32)[:, :, :15].reshape(2, 3, 3, 5)[:, :, :, ::-1],   # rows reversed
    np.lib.stride_tricks.as_strided(np.zeros(200, np.float32), (2, 3, 3, 5), (60, 8, 20, 4)),   # planes overlap
    np.zeros((2, 3, 3, 6), np.float32)[:, :, :, :5],   # rows of a plane apart
])
def test_planes_that_overlap_or_are_not_contiguous_are_refused(dst):
    with pytest.raises(ValueError, match="contiguous"):
        layout.nhwc_to_nchw(np.zeros((2, 3, 5, 3), np.float32), dst)
