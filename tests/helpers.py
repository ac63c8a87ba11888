"""Small signal makers for tests."""

from __future__ import annotations

import contextlib

import numpy as np


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = 16_000, amp: float = 0.5, channels: int = 1):
    """A sine, float32 ``(channels, samples)``."""
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


CORPUS = ["a dog barks loudly", "rain falls on a roof", "a bell rings twice", "an engine idles"] * 50


def bpe_tokenizer(corpus=CORPUS, special=("<s>", "<pad>", "</s>", "<unk>"), **named):
    """A small BPE tokenizer trained in-process (no hub), wrapped as a transformers fast tokenizer.
    ``special`` come first in the vocabulary (ids 0, 1, ...); ``named`` overrides the named tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=list(special)))
    names = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", **named}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def reference_package(name: str):
    """Import a published reference package (installed by `make test`); skipped when absent, an
    error under CI, where the Makefile installs it."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"reference package {name} missing under CI ({exc}); `make test` installs it")
        pytest.skip(f"reference package {name} not installed ({exc})")


def odd_but_valid_clips(prompt=None, long_seconds: float = 600.0) -> dict:
    """Valid audio a user's folder may hold that is far from a model's training format (issue 10):
    tiny, many-channel, very high and very low rates, 10 minutes long, silent, clipped, DC-shifted.
    Every scorer must score each of these to finite numbers. ``prompt`` is attached to every clip;
    ``long_seconds`` shortens the long one for backends whose tiny test model still costs ~0.5 s per
    10 s window on CPU (the windowing code does not depend on the number of windows)."""
    from ttaeval import Clip

    def clip(audio: np.ndarray, rate: int) -> Clip:
        return Clip(audio.astype(np.float32), rate, prompt, source="odd")

    return {
        "0.05 s": clip(tone(300, 0.05), 16_000),
        "8 channels, 48 kHz": clip(tone(300, 1.0, rate=48_000, channels=8), 48_000),
        "192 kHz": clip(tone(300, 1.0, rate=192_000), 192_000),
        "8 kHz stereo": clip(tone(300, 1.0, rate=8_000, channels=2), 8_000),
        f"{long_seconds:g} s, 8 kHz": clip(tone(300, long_seconds, rate=8_000), 8_000),
        "digital silence": clip(np.zeros((1, 16_000)), 16_000),
        "full-scale clipping": clip(np.clip(20 * tone(300, 1.0), -1, 1), 16_000),
        "DC offset": clip(tone(300, 1.0, amp=0.2) + 0.3, 16_000),
    }


def score_as_the_runner_does(scorer, clips) -> list:
    """Convert each clip to the scorer's rate and channels (``ttaeval.io.audio.prepare``, as the runner
    does), then score them in one call."""
    from ttaeval.io.audio import prepare

    return scorer.score([prepare(c, scorer.sample_rate, scorer.channels) for c in clips])


def assert_all_scored(names, results) -> None:
    """Every metric that applies to the clip has a finite value; the failing clip is named. Metrics
    that do not apply (``not_applicable``, e.g. a judge's relation question without two events) may be
    NaN."""
    import math

    for name, r in zip(names, results, strict=True):
        assert not r.errors, f"{name}: {r.errors}"
        bad = {k: v for k, v in r.values.items() if k not in r.not_applicable and not math.isfinite(v)}
        assert not bad, f"{name}: non-finite {bad}"
        assert any(math.isfinite(v) for v in r.values.values()), f"{name}: nothing scored"


def random_protocol_weights(
    folder, which=("panns", "vggish", "openl3", "passt", "laion"), cache=None
) -> dict:
    """Random weights in the released layouts of the protocols' models (no hub here), saved under
    ``folder``; returns the ``--weights KEY=PATH`` pairs. Each model is seeded on its own (seed 0), so
    its weights do not depend on which others are made with it. For a look by hand, from the repository:
    ``python -c "import sys; sys.path[:0] = ['tests']; import helpers; helpers.random_protocol_weights('w')"``

    ``cache``: a folder (the ``weights_cache`` fixture) where each model's weights are kept under a key
    of their recipe's content (the recipes below, the architecture's source file, torch's and the
    packages' versions): made once, then hard-linked (copied across file systems) into ``folder``. The
    files are shared: open them for reading only. Safe under pytest-xdist: an entry is made under a
    temporary name and renamed into place; of two workers making it at once, one rename wins.
    """
    import contextlib
    import hashlib
    import inspect
    import os
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    out = {}
    for name in ("panns", "vggish", "openl3", "passt", "laion"):
        if name not in which:
            continue
        files, ingredients, build = _protocol_model(name)
        if cache is None:
            build(folder)
        else:
            digest = hashlib.sha256(inspect.getsource(_protocol_model).encode())
            for item in ingredients:
                digest.update(b"\0" + (Path(item).read_bytes() if os.path.isfile(item) else item.encode()))
            entry = Path(cache) / f"{name}-{digest.hexdigest()[:20]}"
            if not entry.is_dir():
                Path(cache).mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
                try:
                    build(tmp)
                    with contextlib.suppress(OSError):  # another worker's entry is in place: keep it
                        os.replace(tmp, entry)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                for stale in Path(cache).glob(f"{name}-*"):  # an older recipe's weights
                    if stale != entry:
                        shutil.rmtree(stale, ignore_errors=True)
            for src in sorted(entry.rglob("*")):
                dst = folder / src.relative_to(entry)
                if src.is_dir():
                    dst.mkdir(exist_ok=True)
                    continue
                dst.unlink(missing_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        out.update({key: folder / f for key, f in files.items()})
    return out


def _protocol_model(name: str):
    """One protocol model's recipe: ``({weights key: file or folder name}, [source files and version
    strings its random weights depend on], build(folder))``. Skips when its reference package is
    missing (an error under CI)."""
    import contextlib
    import importlib.metadata
    import inspect
    import io

    import torch

    def versions(*packages):
        return [f"{p}=={importlib.metadata.version(p)}" for p in ("torch", *packages)]

    if name == "panns":
        import test_backbones

        pann = test_backbones.fad_pann_module()

        def build(folder):
            torch.manual_seed(0)
            net = pann.Cnn14_16k(16000, 512, 160, 64, 50, 8000, 527)
            torch.save({"model": net.state_dict()}, folder / "panns.pth")

        return {"panns": "panns.pth"}, [pann.__file__, *versions("torchlibrosa")], build
    if name == "vggish":
        tv = reference_package("torchvggish")

        def build(folder):
            torch.manual_seed(0)
            torch.save(tv.torchvggish._vgg(postprocess=False).state_dict(), folder / "vggish.pth")

        return {"vggish": "vggish.pth"}, [tv.torchvggish.__file__, *versions("torchvggish")], build
    if name == "openl3":
        tl3 = reference_package("torchopenl3")

        def build(folder):
            torch.manual_seed(0)
            net = tl3.models.PytorchOpenl3(input_repr="mel256", embedding_size=512, content_type="env")
            torch.save(net.state_dict(), folder / "openl3.pth")

        return {"openl3": "openl3.pth"}, [tl3.models.__file__, *versions("torchopenl3")], build
    if name == "passt":
        reference_package("hear21passt")
        reference_package("timm")
        from ttaeval.backbones.passt import passt_models

        passt = passt_models().passt

        def build(folder):
            torch.manual_seed(0)
            with contextlib.redirect_stdout(io.StringIO()):
                net = passt.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, input_tdim=998)
            torch.save(net.state_dict(), folder / "passt.pt")

        return {"passt": "passt.pt"}, [passt.__file__, *versions("hear21passt", "timm")], build
    if name == "laion":
        import test_clap_laion

        reference_package("laion_clap")

        def build(folder):
            torch.manual_seed(0)
            test_clap_laion.save_like_laion(test_clap_laion.package_module(False), folder / "laion.pt")
            bpe_tokenizer().save_pretrained(folder / "roberta")
            test_clap_laion.tiny_roberta_config().save_pretrained(folder / "roberta")

        sources = [test_clap_laion.__file__, inspect.getsource(bpe_tokenizer), repr(CORPUS)]
        return (
            {"laion": "laion.pt", "roberta": "roberta"},
            [*sources, *versions("laion_clap", "transformers", "tokenizers")],
            build,
        )
    raise ValueError(f"no recipe for {name!r}")


_FORK_SERVER = """
import json, os, runpy, signal, sys
for name in sys.argv[1:]:
    __import__(name)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children: none is left a zombie
for line in sys.stdin:
    module, args, log = json.loads(line)
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        continue
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1), os.dup2(fd, 2), os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.argv, code = [module, *args], 1
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        with open(log + ".rc", "w") as f:
            f.write(str(code))
        os._exit(code)
"""


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread for the block, as a command started with OMP_NUM_THREADS=1 (or a torchrun
    rank) computes: an in-process reference run then gives the same floats as the commands."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def wait_for_rows(db, table: str, n: int, proc, timeout: float = 120) -> bool:
    """Until the store ``db`` holds n rows in ``table`` (or the process ended): True if it is still
    running. Read-only: the poll never creates the file, and a store being set up reads as empty."""
    import sqlite3
    import time
    from pathlib import Path

    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if Path(db).exists():
            try:
                with sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True, timeout=1) as con:
                    if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= n:
                        return True
            except sqlite3.DatabaseError:
                pass
        time.sleep(0.05)
    return proc.poll() is None


class ForkServer:
    """A Python process that imports ``modules`` once, then forks a child for each ``python -m
    MODULE ARGS`` command it is given. A test that kills a command at a dozen random points starts
    a dozen commands: forked, each costs its own work, not another interpreter start and torch
    import. The server is single-threaded, so forking it is safe."""

    def __init__(self, modules, env):
        import subprocess
        import sys

        self._server = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER, *modules],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        self._started: list[ForkedCommand] = []

    def start(self, module: str, args, log) -> ForkedCommand:
        import json

        self._server.stdin.write(json.dumps([module, [str(a) for a in args], str(log)]) + "\n")
        self._server.stdin.flush()
        pid = self._server.stdout.readline()
        if not pid:  # its traceback went to the test's stderr
            raise RuntimeError(f"the fork server ended with exit status {self._server.wait()}")
        self._started.append(ForkedCommand(int(pid), str(log)))
        return self._started[-1]

    def close(self) -> None:
        """Ends the server, and kills any command still running (a failed test leaves none behind)."""
        import signal

        for command in self._started:
            command.send_signal(signal.SIGKILL)
        self._server.stdin.close()
        self._server.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ForkedCommand:
    """A forked command, as much of ``subprocess.Popen`` as the kill tests use: ``poll`` (None while
    it runs, then its exit status, -9 when SIGKILL ended it), ``send_signal``, ``wait`` and
    ``output`` (its stdout and stderr)."""

    def __init__(self, pid: int, log: str):
        self.pid, self.log, self.returncode = pid, log, None

    def poll(self):
        import os
        from pathlib import Path

        if self.returncode is None:  # once it has ended its pid is never signalled again
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                rc = Path(self.log + ".rc")
                self.returncode = int(rc.read_text()) if rc.is_file() else -9
        return self.returncode

    def send_signal(self, sig) -> None:
        import contextlib
        import os

        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float = 60):
        import time

        end = time.time() + timeout
        while self.poll() is None:
            if time.time() > end:
                raise TimeoutError(f"forked command {self.pid} still running after {timeout} s")
            time.sleep(0.01)
        return self.poll()

    def output(self) -> str:
        from pathlib import Path

        return Path(self.log).read_text(errors="replace")
