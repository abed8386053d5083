"""The uplink: seeded Rayleigh fading, path loss, rates, delays and eq. (41)'s shares."""

import numpy as np
import pytest

from fedlora_ray.channel import Uplink, equal_delay_shares, equal_shares
from fedlora_ray.config import ChannelConfig


def test_fading_is_unit_mean_exponential_and_a_function_of_seed_round_client():
    up = Uplink(ChannelConfig(), 50, seed=0)
    draws = np.concatenate([up.fading(t, np.arange(50)) for t in range(200)])
    assert draws.mean() == pytest.approx(1.0, abs=0.05)  # E|g|^2 = 1
    assert np.mean(draws < np.log(2)) == pytest.approx(0.5, abs=0.03)  # Exp(1) median ln 2
    assert np.array_equal(up.fading(3, np.array([7, 2])), up.fading(3, np.array([2, 7]))[::-1])
    assert not np.array_equal(up.fading(3, np.arange(5)), up.fading(4, np.arange(5)))
    assert np.array_equal(
        up.fading(3, np.arange(5)), Uplink(ChannelConfig(), 50, seed=0).fading(3, np.arange(5))
    )


def test_path_loss_and_mean_snr_follow_the_defaults():
    up = Uplink(ChannelConfig(), 2000, seed=1)
    assert up.distance_m.min() >= 50 and up.distance_m.max() <= 500
    one = Uplink(ChannelConfig(distance_min_m=1000, distance_max_m=1000), 1, seed=0)
    assert one.path_loss_db[0] == pytest.approx(128.1)
    snr_db = 10 * np.log10(up.mean_snr)
    assert 4 < snr_db.min() < 6 and 40 < snr_db.max() < 42  # docs/algorithms.md §4: about 4 to 41 dB


def test_upload_time_is_bits_over_rate():
    up = Uplink(ChannelConfig(bandwidth_hz=1e6), 3, seed=0)
    snr = np.array([1.0, 3.0, 15.0])  # log2(1 + snr) = 1, 2, 4
    secs = up.upload_seconds(np.array([1e6, 1e6, 0.0]), np.array([0.5, 0.25, 0.25]), snr)
    np.testing.assert_allclose(secs, [2.0, 2.0, 0.0])


def test_eq41_shares_use_the_band_and_equalise_delays():
    snr = np.array([2.0, 30.0, 500.0, 9.0])
    shares = equal_delay_shares(snr)
    assert shares.sum() == pytest.approx(1.0)
    up = Uplink(ChannelConfig(), 4, seed=0)
    secs = up.upload_seconds(np.full(4, 3e6), shares, snr)
    assert np.ptp(secs) == pytest.approx(0, abs=1e-12)
    assert secs.max() < up.upload_seconds(np.full(4, 3e6), equal_shares(4), snr).max()  # beats equal split


def test_compute_time_from_device_speed():
    up = Uplink(ChannelConfig(compute_samples_per_s=100.0, compute_sigma=0.5), 500, seed=0)
    speeds = up.samples_per_s
    assert np.median(speeds) == pytest.approx(100, rel=0.1) and speeds.std() > 20
    np.testing.assert_allclose(up.compute_seconds(np.array([0, 1]), np.array([80, 80])), 80 / speeds[:2])
    assert (Uplink(ChannelConfig(), 3, seed=0).compute_seconds(np.arange(3), np.full(3, 80)) == 0).all()
