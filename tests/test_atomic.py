import os

import pytest
import torch

from voicesearch import voice
from voicesearch.voice import load_voice, save_voice


def test_crash_mid_write_keeps_previous_best(tmp_path, monkeypatch):
    path = tmp_path / "voice_best.pt"
    good = torch.ones(510, 1, 256)
    save_voice(good, path)

    real_fdopen = os.fdopen

    class Exploding:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *a):
            self.f.close()
        def write(self, data):
            self.f.write(data[: len(data) // 2])  # half the bytes reach the disk, then the process "dies"
            raise OSError("disk full")
        def flush(self):
            pass
        def fileno(self):
            return self.f.fileno()

    monkeypatch.setattr(voice.os, "fdopen", lambda fd, mode: Exploding(real_fdopen(fd, mode)))
    with pytest.raises(OSError):
        save_voice(torch.zeros(510, 1, 256), path)
    monkeypatch.undo()
    assert torch.equal(load_voice(path), good)
    assert [p.name for p in tmp_path.iterdir()] == ["voice_best.pt"]  # no temp file left behind
