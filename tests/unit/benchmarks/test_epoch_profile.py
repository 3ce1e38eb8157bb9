"""benchmarks.epoch_profile: each arm trains what it names, and the AVX2 arm's process runs AVX2
kernels (the emulation its figures rest on)."""

from __future__ import annotations

import pytest

from benchmarks import epoch_profile


@pytest.mark.parametrize("arm", sorted(epoch_profile.ARMS))
def test_an_arm_is_the_paper_point_with_its_own_memory_format(arm: str) -> None:
    config = epoch_profile._trial_config(epoch_profile.ARMS[arm])
    assert (config.recursion_steps, config.crop_scale) == (10, 0.25)
    assert config.channels_last == epoch_profile.ARMS[arm].get("channels_last", True)
