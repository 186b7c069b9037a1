import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from voicesearch import registry
from voicesearch.errors import InputError
from voicesearch.strategy import Strategy

REPO = Path(__file__).resolve().parents[1]


def test_builtins_are_discovered_through_entry_points():
    assert {"random-walk", "interpolate", "fd-adam", "cma-es", "nevergrad", "gradient", "chain"} <= set(registry.names("strategies"))
    assert {"resemblyzer", "ecapa", "wavlm", "hybrid", "dnsmos"} <= set(registry.names("scorers"))
    assert {"kokoro", "kokoro-onnx"} <= set(registry.names("renderers"))
    assert {"full", "offset", "pca", "mixture"} <= set(registry.names("spaces"))
    assert registry.get("spaces", "offset").__name__ == "OffsetSpace"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(InputError, match="did you mean random-walk"):
        registry.get("strategies", "random-wlak")


def test_variant_names_bind_the_variant():
    @registry.register("strategies", "test-variant")
    class WithVariant(Strategy):
        def __init__(self, *a, variant="plain", **k):
            self.variant = variant

        def ask(self): ...
        def tell(self, x, r): ...

    assert registry.get("strategies", "test-variant:Fancy")().variant == "Fancy"


def test_broken_plugin_is_reported_and_others_still_work(monkeypatch):
    eps = dict(registry._entry_points("scorers"))
    eps["broken"] = EntryPoint("broken", "no_such_module_xyz:Thing", "voicesearch.scorers")
    monkeypatch.setattr(registry, "_entry_points", lambda kind: eps if kind == "scorers" else {})
    with pytest.raises(InputError, match="scorer plug-in 'broken'.*failed to import: ModuleNotFoundError"):
        registry.get("scorers", "broken")
    rows = {name: doc for name, doc, _ in registry.describe("scorers")}
    assert rows["broken"].startswith("[failed to load]")
    assert not rows["compose"].startswith("[failed")


def test_user_strategy_file_registers_by_name():
    registry.load_plugin(str(REPO / "examples" / "custom_strategy.py"))
    cls = registry.get("strategies", "shrinking-climb")
    assert issubclass(cls, Strategy)


def test_plugin_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import nothing_here_at_all\n")
    with pytest.raises(InputError, match="failed to import: ModuleNotFoundError"):
        registry.load_plugin(str(bad))
    with pytest.raises(InputError, match="does not exist"):
        registry.load_plugin(str(tmp_path / "missing.py"))


def test_installed_third_party_scorer_is_listed(tmp_path):
    """The example package installs like any third-party plug-in and shows up by its entry point."""
    site, source = tmp_path / "site", tmp_path / "thirdparty_scorer"
    # built from a copy: setuptools writes build/ next to the sources, which must stay out of the repository
    shutil.copytree(REPO / "examples" / "thirdparty_scorer", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
                    str(source)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    code = ("from voicesearch import registry; cls = registry.get('scorers', 'ltas'); "
            "print(cls.__module__, [n for n, d, o in registry.describe('scorers') if n == 'ltas'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "voicesearch_ltas ['ltas']" in res.stdout
