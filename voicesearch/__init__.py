"""voicesearch: clone a speaker into a Kokoro-82M voice pack by searching its style space.

The public surface: write a `Strategy` or a `Scorer`, register it, and run `search`.
"""
from .errors import InputError
from .loop import Budget, Callback, Progress, Search, StopSearch, search
from .registry import load_plugin, register
from .renderer import Renderer, Renders
from .scorer import Scorer
from .space import FullPackSpace, OffsetSpace, SearchSpace
from .stock import StockVoices
from .strategy import Strategy
from .types import AudioBatch, ScoreResult, TargetSpeech
from .voice import load_voice, load_voices, save_voice

__version__ = "0.1.0"
__all__ = [
    "AudioBatch", "Budget", "Callback", "FullPackSpace", "InputError", "OffsetSpace", "Progress", "Renderer", "Renders",
    "ScoreResult", "Scorer", "Search", "SearchSpace", "StockVoices", "StopSearch", "Strategy", "TargetSpeech",
    "load_plugin", "load_voice", "load_voices", "register", "save_voice", "search",
]
