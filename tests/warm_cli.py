"""A warm `voicesearch` command line for tests that run it many times.

Starting Python and importing torch costs seconds per command on a small shared CPU; a corpus of 50 bad
inputs or a matrix of kills would spend minutes on it. `WarmCli` starts one helper process that imports
voicesearch once and then forks a child per command: each child is a fresh process (own registry, own
signal handlers, own file descriptors) running `voicesearch.cli.main()` exactly as the `voicesearch`
script does, with stdout/stderr going to files at the file-descriptor level, so everything a user would
see is captured, tracebacks included. Children get their own pids: tests send them real signals.

    with WarmCli() as cli:
        rc, out, err = cli.run(["clone", ...])
        child = cli.start(["clone", ...]); os.kill(child.pid, signal.SIGINT); rc, out, err = cli.wait(child)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Child:
    pid: int
    out: Path
    err: Path


class WarmCli:
    def __init__(self, env: dict[str, str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="warm-cli-"))
        self.env = dict(os.environ, COLUMNS="200", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, env=self.env)
        self._n = 0
        assert self._read() == {"ready": True}

    def _ask(self, message: dict) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the warm CLI helper died")
        return json.loads(line)

    def start(self, argv: list, cwd: str | Path | None = None, env: dict[str, str] | None = None) -> Child:
        self._n += 1
        out, err = self.dir / f"{self._n}.out", self.dir / f"{self._n}.err"
        reply = self._ask({"op": "start", "argv": [str(a) for a in argv], "cwd": str(cwd or REPO),
                           "out": str(out), "err": str(err), "env": env or {}})
        return Child(reply["pid"], out, err)

    def wait(self, child: Child, timeout: float = 300) -> tuple[int | None, str, str]:
        """(exit status, stdout, stderr); status -N when killed by signal N, None after a timeout (then killed)."""
        rc = self._ask({"op": "wait", "pid": child.pid, "timeout": timeout})["rc"]
        return rc, child.out.read_text(errors="replace"), child.err.read_text(errors="replace")

    def run(self, argv: list, cwd: str | Path | None = None, timeout: float = 300, env: dict[str, str] | None = None):
        return self.wait(self.start(argv, cwd, env), timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def __enter__(self) -> "WarmCli":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- the helper process


def _child(message: dict) -> None:
    """In the forked child: become `voicesearch ARGV` with its output in files; never return."""
    code = 1
    try:
        os.chdir(message["cwd"])
        os.environ.update(message["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(message["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(message["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        sys.argv = ["voicesearch", *message["argv"]]
        from voicesearch.cli import main

        try:
            main()
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
    except BaseException:  # what an uncaught exception would print
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def _serve() -> None:
    sys.path.insert(0, str(REPO))
    # import what commands need once, without running any torch op here (forked children then start warm,
    # and no thread pool exists yet to be broken by fork)
    import torch

    torch.set_num_threads(1)  # tiny tensors; on a small shared CPU one thread per child wastes least
    import voicesearch.cli  # noqa: F401
    import voicesearch.progress  # noqa: F401
    import voicesearch.report  # noqa: F401
    import voicesearch.report_recorder  # noqa: F401
    import voicesearch.run  # noqa: F401
    from voicesearch import registry

    try:  # what the report imports lazily (librosa loads its submodules on first use; matplotlib its fonts)
        import io

        import librosa
        from matplotlib.figure import Figure

        librosa.power_to_db(librosa.filters.mel(sr=24000, n_fft=1024, n_mels=80, fmax=8000))
        figure = Figure()
        figure.add_subplot().plot([0, 1])
        figure.savefig(io.BytesIO(), format="png")
    except ImportError:
        pass
    for kind in registry.KINDS:
        registry.names(kind)
    for name in ("cma-es", "random-walk"):
        registry.get("strategies", name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "start":
            pid = os.fork()
            if pid == 0:
                _child(message)
            reply = {"pid": pid}
        else:
            reply = {"rc": _wait(message["pid"], message["timeout"])}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    _serve()
