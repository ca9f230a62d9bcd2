"""The service image, without a Docker engine: what it installs and how fast a service starts.

The root ``Dockerfile`` installs the wheel with the locked dependencies, without the dev group and
without the ``pipeline`` extra. This builds that environment with uv in a temporary directory (and
the same with the extra, which is what every service image carried before Beam moved out) and
measures:

- the installed size of each environment (``du`` of the virtual environment, bytecode compiled as
  the image compiles it) and its number of distributions;
- the cold start of the command service from the installed wheel, as the image's entrypoint runs
  it (``meridian serve command``, ``PORT`` set, a clean environment, embedded backend): process
  start to the first 200 from ``/healthz``; the same started as ``python -m
  services.command.app`` (what the CLI costs: its sub-commands' imports); and the import of the
  app module alone. Five runs each, interleaved, each in a new data dir.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5


def _uv() -> str:
    return shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")


def _run(*argv: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: {done.stderr}")
    return done.stdout


def _environment(tmp: Path, wheel: Path, name: str, *extras: str) -> Path:
    """A virtual environment with ``wheel`` and the locked non-dev dependencies (+ ``extras``)."""
    requirements = tmp / f"{name}.txt"
    flags = [f"--extra={extra}" for extra in extras]
    _run(
        _uv(), "export", "--quiet", "--locked", "--no-dev", "--no-emit-project", "--no-hashes",
        *flags, "--output-file", requirements,
    )  # fmt: skip
    venv = tmp / name
    _run(_uv(), "venv", "--quiet", "--python", sys.executable, venv)
    _run(
        _uv(), "pip", "install", "--quiet", "--compile-bytecode", "--link-mode=copy",
        "--python", venv / "bin" / "python", "--requirement", requirements, wheel,
    )  # fmt: skip
    return venv


def _size_mb(venv: Path) -> float:
    return int(_run("du", "-sk", venv).split()[0]) / 1024


def _distributions(venv: Path) -> int:
    return len(list(venv.glob("lib/python*/site-packages/*.dist-info")))


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONSAFEPATH": "1", **extra}


def _cold_start_s(argv: list[str], work: Path, port: int) -> float:
    env = _clean_env(work, PORT=str(port), MERIDIAN_DATA_DIR=str(work / "data"))
    url = f"http://127.0.0.1:{port}/healthz"
    started = time.perf_counter()
    child = subprocess.Popen(
        argv,
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < 60:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.005)
        raise RuntimeError("the command service did not answer /healthz within 60 s")
    finally:
        child.terminate()
        child.wait(timeout=15)


def _import_s(venv: Path, work: Path) -> float:
    started = time.perf_counter()
    _run(venv / "bin" / "python", "-I", "-c", "import services.command.app", cwd=work)
    return time.perf_counter() - started


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run() -> str:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        _run(_uv(), "build", "--quiet", "--wheel", "--out-dir", tmp / "dist")
        (wheel,) = (tmp / "dist").glob("meridian-*.whl")
        service = _environment(tmp, wheel, "service")
        with_beam = _environment(tmp, wheel, "with-beam", "pipeline")
        sizes = {name: (_size_mb(v), _distributions(v)) for name, v in
                 (("service", service), ("with-beam", with_beam))}  # fmt: skip
        serve = [str(service / "bin" / "meridian"), "serve", "command"]
        module = [str(service / "bin" / "python"), "-I", "-m", "services.command.app"]
        starts: list[float] = []
        bare: list[float] = []
        imports: list[float] = []
        for i in range(RUNS + 1):  # the first run is a warm-up (page cache), not counted
            runs = [tmp / f"run-{i}-{n}" for n in range(3)]
            for work in runs:
                work.mkdir()
            measured = (
                _cold_start_s(serve, runs[0], _free_port()),
                _cold_start_s(module, runs[1], _free_port()),
                _import_s(service, runs[2]),
            )
            if i:
                for into, value in zip((starts, bare, imports), measured, strict=True):
                    into.append(value)
    (svc_mb, svc_n), (beam_mb, beam_n) = sizes["service"], sizes["with-beam"]
    return f"""## Service image: dependency size and cold start

What the root `Dockerfile` installs, built with uv in a temporary directory (no Docker engine
here): the wheel and the locked dependencies without the dev group, bytecode compiled, as a
virtual environment; beside it the same with the `pipeline` extra, which every service image
carried before Beam moved out of the service dependencies.

| environment | installed size | distributions |
|---|---:|---:|
| service image: no dev group, no `pipeline` extra | {svc_mb:,.0f} MB | {svc_n} |
| with the `pipeline` extra (Beam, shapely): before the split | {beam_mb:,.0f} MB | {beam_n} |
| saved per service image | {beam_mb - svc_mb:,.0f} MB ({(beam_mb - svc_mb) / beam_mb:.0%}) | |

Cold start of the command service from the installed wheel, as the image runs it (`meridian
serve command` with `PORT` set, a clean environment, the embedded backend, a new data dir each
time), {RUNS} runs after one warm-up:

| measure | median | min | max |
|---|---:|---:|---:|
| `meridian serve command`: process start to the first 200 from `/healthz` | {_ms(starts)} |
| the same without the CLI, `python -I -m services.command.app` | {_ms(bare)} |
| `python -I -c 'import services.command.app'` (interpreter start included) | {_ms(imports)} |"""


def _ms(seconds: list[float]) -> str:
    median, low, high = (f(seconds) * 1e3 for f in (statistics.median, min, max))
    return f"{median:,.0f} ms | {low:,.0f} ms | {high:,.0f} ms"


if __name__ == "__main__":
    print(run())
