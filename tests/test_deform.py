"""Smooth random fields, the breathing field and trace, and the pull-back warp."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mrisr.deform import breathing_field, breathing_trace, field_magnitude_mm, smooth_random_field, warp

SHAPE = (32, 28, 12)
ZOOMS = (1.5, 1.5, 3.0)


def test_smooth_random_field_is_deterministic_and_bounded():
    a = smooth_random_field(SHAPE, ZOOMS, max_mm=3.0, rng=np.random.default_rng(7))
    b = smooth_random_field(SHAPE, ZOOMS, max_mm=3.0, rng=np.random.default_rng(7))
    c = smooth_random_field(SHAPE, ZOOMS, max_mm=3.0, rng=np.random.default_rng(8))
    assert a.shape == (3, *SHAPE) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    magnitude = field_magnitude_mm(a, ZOOMS)
    assert magnitude.max() == pytest.approx(3.0, rel=1e-5)
    # a random field, not a translation: the magnitude varies over the field of view
    assert magnitude.min() < 0.9 * magnitude.max()


def test_smooth_random_field_units_and_smoothness():
    field = smooth_random_field((40, 40, 16), (1.0, 2.0, 4.0), max_mm=4.0, rng=np.random.default_rng(1))
    field_mm = field * np.array([1.0, 2.0, 4.0]).reshape(3, 1, 1, 1)
    assert np.sqrt((field_mm**2).sum(axis=0)).max() == pytest.approx(4.0, rel=1e-5)
    # control points 40 mm apart: neighbouring voxels (1 mm apart along X) differ by far less than the amplitude
    step_mm = np.abs(np.diff(field_mm, axis=1)).max()
    assert step_mm < 0.15 * 4.0


def test_smooth_random_field_zero_amplitude_and_bad_input():
    zero = smooth_random_field(SHAPE, ZOOMS, max_mm=0.0, rng=np.random.default_rng(0))
    assert not np.any(zero)
    with pytest.raises(ValueError, match="max_mm"):
        smooth_random_field(SHAPE, ZOOMS, max_mm=-1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="zooms"):
        smooth_random_field(SHAPE, (1.0, 0.0, 1.0), max_mm=1.0, rng=np.random.default_rng(0))


def test_breathing_field_shape_amplitude_and_taper():
    field = breathing_field(SHAPE, ZOOMS, amplitude_mm=4.0)
    assert field.shape == (3, *SHAPE) and field.dtype == np.float32
    magnitude = field_magnitude_mm(field, ZOOMS)
    assert magnitude.max() == pytest.approx(4.0, rel=1e-5)
    field_mm = field * np.asarray(ZOOMS).reshape(3, 1, 1, 1)
    # dominant along Y, an expansion along X, nothing through-plane
    assert np.abs(field_mm[1]).max() > 2.5 * np.abs(field_mm[0]).max()
    assert not np.any(field[2])
    # organs (centre) move more than the body wall (corner)
    centre = magnitude[SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2]
    assert centre > 0.95 * 4.0
    assert magnitude[0, 0, 0] < 0.6 * centre
    # the expansion pushes the two sides apart
    assert np.sign(field_mm[0, 2, 14, 6]) == -np.sign(field_mm[0, -3, 14, 6])


def test_breathing_field_other_axis():
    field = breathing_field(SHAPE, ZOOMS, amplitude_mm=2.0, axis=0)
    field_mm = field * np.asarray(ZOOMS).reshape(3, 1, 1, 1)
    assert np.abs(field_mm[0]).max() > 2.5 * np.abs(field_mm[1]).max()
    with pytest.raises(ValueError, match="in-plane"):
        breathing_field(SHAPE, ZOOMS, axis=2)


def test_breathing_trace_range_and_determinism():
    trace = breathing_trace(40, 0.5, np.random.default_rng(3))
    again = breathing_trace(40, 0.5, np.random.default_rng(3))
    assert trace.shape == (40,) and trace.dtype == np.float32
    np.testing.assert_array_equal(trace, again)
    assert trace.min() >= 0.0 and trace.max() <= 1.0
    # rests near end-expiration and reaches deep breaths
    assert trace.min() < 0.05 and trace.max() > 0.75


def test_breathing_trace_is_periodic_ish():
    tr, period = 0.25, 4.0
    trace = breathing_trace(128, tr, np.random.default_rng(0), period_s=period, irregularity=0.15)
    spectrum = np.abs(np.fft.rfft(trace - trace.mean()))
    freqs = np.fft.rfftfreq(len(trace), d=tr)
    peak = freqs[np.argmax(spectrum)]
    assert abs(peak - 1.0 / period) < 0.25 / period
    regular = breathing_trace(64, tr, np.random.default_rng(0), period_s=period, irregularity=0.0)
    lag = int(period / tr)
    np.testing.assert_allclose(regular[lag:], regular[:-lag], atol=1e-5)
    # irregular breathing is not exactly periodic
    assert np.abs(trace[lag:] - trace[:-lag]).max() > 0.05


def test_breathing_trace_bad_input():
    with pytest.raises(ValueError, match="frames"):
        breathing_trace(0, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="irregularity"):
        breathing_trace(10, 0.5, np.random.default_rng(0), irregularity=1.5)


def test_warp_zero_field_is_identity():
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    zero = np.zeros((3, *SHAPE), dtype=np.float32)
    out = warp(image, zero)
    assert out.dtype == np.float32 and out.shape == SHAPE
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(warp(image, zero, order=3), image, atol=1e-4)


def test_warp_samples_at_x_plus_d():
    image = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    shift = np.zeros((3, *SHAPE), dtype=np.float32)
    shift[1] = 2.0
    out = warp(image, shift)
    np.testing.assert_allclose(out[:, :-2], image[:, 2:], atol=1e-6)
    # edges are extended, not zero
    np.testing.assert_allclose(out[:, -2:], image[:, -1:].repeat(2, axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="displacement"):
        warp(image, shift[:, :-1])


def test_warp_is_fast_on_a_real_sized_frame():
    shape = (128, 144, 32)
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    field = smooth_random_field(shape, ZOOMS, 4.0, rng) + breathing_field(shape, ZOOMS)
    start = time.perf_counter()
    warp(image, field)
    # ~0.05 s on a quiet 2-core machine; generous for a busy shared one
    assert time.perf_counter() - start < 2.0


def test_global_rng_untouched():
    state = np.random.get_state()[1].copy()
    smooth_random_field(SHAPE, ZOOMS, 2.0, np.random.default_rng(0))
    breathing_trace(20, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(np.random.get_state()[1], state)
