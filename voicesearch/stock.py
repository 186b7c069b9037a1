"""The stock voices a search starts from (Kokoro ships 54)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError
from .voice import load_voices

VOICES_DIR_ENV = "VOICESEARCH_VOICES_DIR"


@dataclass
class StockVoices:
    """N named voice packs, stacked as (N, 510, 256) float32 on CPU."""

    names: list[str]
    packs: torch.Tensor

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.packs[self.names.index(name)]
        except ValueError:
            raise InputError(f"no stock voice {name!r}; known: {', '.join(self.names[:12])}…") from None

    def subset(self, keep) -> "StockVoices":
        """Voices whose name passes `keep(name)`, e.g. a language prefix or a leave-one-out filter."""
        idx = [i for i, n in enumerate(self.names) if keep(n)]
        if not idx:
            raise InputError("no stock voice left after filtering; loosen the filter")
        return StockVoices([self.names[i] for i in idx], self.packs[idx])

    def without(self, *names: str) -> "StockVoices":
        return self.subset(lambda n: n not in names)

    @staticmethod
    def from_folder(folder: str | os.PathLike) -> "StockVoices":
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"voices folder {folder} does not exist; set --voices or ${VOICES_DIR_ENV} to a folder of .pt packs")
        voices: dict[str, torch.Tensor] = {}
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in (".pt", ".npz", ".bin"):
                voices.update(load_voices(f))
        if not voices:
            raise InputError(f"voices folder {folder} holds no .pt/.npz voice packs")
        names = sorted(voices)
        return StockVoices(names, torch.stack([voices[n][:, 0, :] for n in names]))


def voices_folder_from_env() -> Path | None:
    value = os.environ.get(VOICES_DIR_ENV)
    return Path(value) if value else None
