"""facerefiner.resources: the memory estimate (interpolation of the measured tables) and the check."""

from __future__ import annotations

import pytest

from facerefiner import resources as R
from facerefiner.refine import preset


def test_interpolation_is_linear_in_texels_and_extrapolates_the_last_segment():
    t = {100: 10.0, 200: 40.0}
    assert R._interpolate(t, 100) == 10.0 and R._interpolate(t, 200) == 40.0
    # halfway in S^2 between 100^2 and 200^2 is S = sqrt(25000)
    assert R._interpolate(t, int(round(25000 ** 0.5))) == pytest.approx(25.0, abs=0.1)
    assert R._interpolate(t, 300) == pytest.approx(40.0 + 30.0 * (90000 - 40000) / 30000)
    assert R._interpolate(t, 10) == 10.0  # never below the smallest measurement


def test_estimates_follow_the_measured_tables():
    assert R.refine_memory_mb(preset("default", size=4096)) == R.REFINE_PEAK_MB[4096]
    assert R.refine_memory_mb(preset("default", size=512), export_size=8192) == R.UNWRAP_PEAK_MB[8192]
    assert R.unwrap_memory_mb(2048) == R.UNWRAP_PEAK_MB[2048]
    sizes = R.refine_sizes(preset("default"))
    assert list(sizes) == sorted(sizes) and all(sizes[a] <= sizes[b] + 100 for a, b in zip(sizes, list(sizes)[1:]))


def test_check_refuses_with_the_flag_the_amounts_and_a_size_that_fits(monkeypatch):
    R.check_memory(1000.0, "--size", 512, available_mb=2000.0)  # fits: no error
    with pytest.raises(R.MemoryLimitError) as e:
        R.check_memory(5000.0, "--size", 2048, sizes={512: 500.0, 1024: 1500.0, 2048: 5000.0}, available_mb=2000.0)
    msg = str(e.value)
    assert msg.startswith("--size 2048 needs about 4.9 GB") and "2.0 GB is available" in msg
    assert "use --size 1024 or less" in msg and R.CHECK_ENV in msg and "\n" not in msg
    with pytest.raises(R.MemoryLimitError) as e:  # nothing fits: no suggestion
        R.check_memory(5000.0, "--size", 2048, sizes={512: 4000.0}, available_mb=2000.0)
    assert "use --size" not in str(e.value)
    monkeypatch.setenv(R.CHECK_ENV, "off")
    R.check_memory(5000.0, "--size", 2048, available_mb=2000.0)


def test_available_memory_is_read_on_linux():
    a = R.available_memory_mb()
    assert a is None or a > 0
