"""The pca and mixture spaces on the 54 real stock voices: exact round trips, units, honest limits."""
from __future__ import annotations

import io

import pytest
import torch

from strategies.common import column_median
from strategies.spaces import MixtureSpace, PCASpace
from voicesearch import registry
from voicesearch.errors import InputError


@pytest.fixture(scope="module")
def pca(stock):
    return PCASpace(stock)


@pytest.fixture(scope="module")
def mixture(stock):
    return MixtureSpace(stock, bias="true")  # options arrive as CLI strings


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_pca_has_n_minus_1_axes_and_refuses_more(stock, pca):
    n = len(stock)
    assert pca.dim == n - 1 == 53
    assert torch.allclose(pca.explained.sum(), torch.tensor(1.0), atol=1e-4)  # all the stock variance
    assert torch.allclose(pca.axes @ pca.axes.T, torch.eye(pca.dim), atol=1e-4)
    with pytest.raises(InputError, match=r"k=256 but 54 stock voices span only 53"):
        PCASpace(stock, k="256")


def test_pca_reaches_every_stock_voice_in_std_units(stock, pca):
    x = pca.from_packs(stock.packs)
    assert (pca.to_packs(x) - stock.packs).abs().max() < 1e-4
    assert torch.allclose(x.std(0), torch.ones(pca.dim), atol=1e-3)  # units: one stock std per axis
    assert torch.equal(pca.scale(), torch.ones(pca.dim))
    assert torch.allclose(pca.to_packs(torch.zeros(1, pca.dim))[0], stock.packs.mean(0), atol=1e-5)


def test_pca_median_origin_raw_units_and_one_frame(stock):
    median = PCASpace(stock, k=12, center="median", units="raw")
    assert median.from_packs(column_median(stock.packs)[None]).abs().max() < 1e-3  # x = 0 is the median
    assert torch.allclose(median.scale(), median.std)
    assert median.from_packs(stock.packs).std(0).sub(median.std).abs().max() < 1e-2 * median.std.max()

    frame = PCASpace(stock, k=10, frame="50")
    packs = frame.to_packs(torch.randn(3, 10))
    assert packs.shape == (3, 510, 256) and torch.equal(packs[:, 0], packs[:, 509])
    x = frame.from_packs(stock.packs[:2])
    assert torch.allclose(frame.from_packs(frame.to_packs(x)), x, atol=1e-4)
    with pytest.raises(InputError, match="between 0 and 509"):
        PCASpace(stock, frame=600)


def test_pca_is_differentiable_and_resumes(stock, pca):
    x = torch.zeros(2, pca.dim, requires_grad=True)
    pca.to_packs(x)[:, 10, :5].sum().backward()
    assert x.grad.abs().sum() > 0
    restored = PCASpace(stock)
    restored.load_state_dict(_roundtrip(pca.state_dict()))
    assert torch.equal(restored.to_packs(torch.ones(1, pca.dim)), pca.to_packs(torch.ones(1, pca.dim)))
    with pytest.raises(InputError, match="another shape"):
        PCASpace(stock, k=5).load_state_dict(pca.state_dict())


def test_mixture_finds_each_stock_voice_and_mixtures(stock, mixture):
    n = len(stock)
    assert mixture.dim == n + 256
    x = mixture.from_packs(stock.packs[:6])
    weights = torch.softmax(x[:, :n], dim=1)
    assert torch.all(weights[torch.arange(6), torch.arange(6)] > 0.999)
    assert (mixture.to_packs(x) - stock.packs[:6]).abs().max() < 1e-3

    g = torch.Generator().manual_seed(0)
    x0 = torch.cat([2 * torch.randn(3, n, generator=g), 0.05 * torch.randn(3, 256, generator=g)], dim=1)
    packs = mixture.to_packs(x0)
    assert (mixture.to_packs(mixture.from_packs(packs)) - packs).abs().max() < 1e-4
    plain = MixtureSpace(stock)
    assert torch.allclose(plain.to_packs(torch.zeros(1, n))[0], stock.packs.mean(0), atol=1e-5)


def test_mixture_is_differentiable_and_checks_its_stock(stock, mixture):
    x = torch.zeros(1, mixture.dim, requires_grad=True)
    mixture.to_packs(x)[0, 3].sum().backward()
    assert x.grad[0, : len(stock)].abs().sum() > 0 and torch.allclose(x.grad[0, len(stock):], torch.full((256,), 1.0))
    mixture.load_state_dict(_roundtrip(mixture.state_dict()))
    with pytest.raises(InputError, match="other stock voices"):
        MixtureSpace(stock.without("af_heart"), bias=True).load_state_dict(mixture.state_dict())


def test_spaces_are_registered():
    assert registry.get("spaces", "pca") is PCASpace
    assert registry.get("spaces", "mixture") is MixtureSpace
