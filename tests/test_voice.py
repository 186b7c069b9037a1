import io
import pickle

import numpy as np
import pytest
import torch

from voicesearch.errors import InputError
from voicesearch.voice import as_pack, load_voice, load_voices, save_voice, save_voices


def _pack(seed=0):
    return torch.randn(510, 1, 256, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".bin"])
def test_round_trip(tmp_path, suffix):
    pack = _pack()
    path = save_voice(pack, tmp_path / f"v{suffix}", name="mine")
    back = load_voice(path)
    assert back.shape == (510, 1, 256) and back.dtype == torch.float32
    assert torch.equal(back, pack)


def test_voices_bin_archive_holds_many(tmp_path):
    path = save_voices({"a": _pack(1), "b": _pack(2)}, tmp_path / "voices.bin")
    voices = load_voices(path)
    assert sorted(voices) == ["a", "b"] and torch.equal(voices["b"], _pack(2))
    with pytest.raises(InputError, match="holds 2 voices"):
        load_voice(path)
    assert torch.equal(load_voice(path, "a"), _pack(1))


def test_stock_pack_loads(voices_dir):
    pack = load_voice(voices_dir / "af_heart.pt")
    assert pack.shape == (510, 1, 256) and torch.isfinite(pack).all()


def test_style_vector_broadcasts():
    style = torch.arange(256, dtype=torch.float32)
    pack = as_pack(style)
    assert pack.shape == (510, 1, 256) and torch.equal(pack[123, 0], style)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(510, 2, 256), "not a Kokoro voice pack"),
    (torch.zeros(10, 256), "not a Kokoro voice pack"),
    (torch.full((256,), float("nan")), "NaN"),
    (torch.zeros(256, dtype=torch.int64), "float"),
])
def test_rejects_bad_tensors(bad, message):
    with pytest.raises(InputError, match=message):
        as_pack(bad)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/voicesearch_pwned_marker",))


def test_pickle_payload_does_not_execute(tmp_path):
    import os
    marker = "/tmp/voicesearch_pwned_marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"voice": _Evil()}, path)  # a .pt whose unpickling would run a shell command
    with pytest.raises(InputError, match="not a plain tensor file"):
        load_voice(path)
    assert not os.path.exists(marker)


def test_pickled_npz_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, v=np.array([_Evil()], dtype=object))
    with pytest.raises(InputError):
        load_voice(path)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"not a zip at all", "not a")])
def test_corrupt_files(tmp_path, content, message):
    for suffix in (".pt", ".npz"):
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(content)
        with pytest.raises(InputError, match=message):
            load_voice(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_voice(tmp_path / "nope.pt")
