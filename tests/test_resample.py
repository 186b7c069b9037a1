"""resample_batch: the one place a batch changes sample rate (Renders, dnsmos, features): waves, lengths and f0."""
from __future__ import annotations

import math

import torch

from voicesearch.resample import resample, resample_batch
from voicesearch.types import AudioBatch


def test_a_batch_is_resampled_item_by_item_with_ceiled_lengths_and_its_f0():
    t = torch.arange(24000) / 24000
    waves = [torch.sin(2 * math.pi * 220 * t[:n]) * 0.3 for n in (24000, 17001, 9999)]
    batch = AudioBatch.from_list(waves, 24000)
    batch.f0 = torch.full((3, 80), 220.0)
    out = resample_batch(batch, 16000)
    assert out.sample_rate == 16000 and out.f0 is batch.f0
    assert out.lengths.tolist() == [16000, math.ceil(17001 * 2 / 3), math.ceil(9999 * 2 / 3)]
    for i, wave in enumerate(waves):
        alone = resample(wave, 24000, 16000)
        assert alone.shape[-1] == int(out.lengths[i])
        # the zero padding after a shorter item reaches only the kernel's half-width into its tail
        torch.testing.assert_close(out.item(i)[:-40], alone[:-40], atol=1e-5, rtol=0)
    assert resample_batch(batch, 24000) is batch
