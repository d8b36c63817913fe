"""What the benchmark scripts share: the checkout's ROOT, subprocess chains that skip finished steps, toolkit command
lines (training and evaluation), and publishing a section of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]


class RunSettings(Protocol):
    """Where logs go (``out/logs``) and how many chains run side by side (one torch thread each if > 1)."""

    out: Path
    jobs: int


@dataclass
class Step:
    """One subprocess; ``done`` is a file that exists once it has finished (then it is skipped)."""

    name: str
    argv: list[str]
    done: Path
    seconds: float | None = None


def run_measured(argv: list[str], log: Path, samples: list | None = None) -> tuple[int, float, float]:
    """(exit code, wall s, peak RSS GiB) of a child process run offline from the checkout, its output (after
    the command line) into ``log``; ``samples`` receives
    (time.time(), RSS GiB) every 0.2 s, so a phase's peak can be read off by its timestamps."""
    import threading

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        fh.write("$ " + shlex.join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.2):
                try:
                    with open(f"/proc/{proc.pid}/status") as st:
                        kb = next(int(ln.split()[1]) for ln in st if ln.startswith("VmRSS"))
                except (OSError, StopIteration):
                    return
                if samples is not None:
                    samples.append((time.time(), kb / 2**20))

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 2**20


def train_argv(script: str, config: str, out_dir: Path, sets: list[str], resume: bool = False,
               report_to: str = "none") -> list[str]:
    argv = [script, "--config", config, "--set", f"train.output_dir={out_dir}", "--set", f"train.report_to={report_to}"]
    for s in sets:
        argv += ["--set", s]
    return argv + (["--resume", "latest"] if resume else [])


def evaluate_argv(model: Path, kind: str, steps: list[int], out: Path, *, guidance: float, reference: Path,
                  num_images: int, batch_size: int = 100, fid_features: str = "testbed",
                  prompt_accuracy: str = "testbed", prompt_accuracy_dir: Path | None = None, threads: int = 0,
                  seed: int = 0) -> list[str]:  # fmt: skip
    """``python``'s arguments for ``lcm_distill.cli.evaluate`` (after the interpreter): one report.json in ``out``."""
    argv = ["-m", "lcm_distill.cli.evaluate", "--model", str(model), "--kind", kind, "--steps", *map(str, steps),
            "--guidance", f"{guidance:g}", "--reference", str(reference), "--fid-features", fid_features,
            "--prompt-accuracy", prompt_accuracy]  # fmt: skip
    if prompt_accuracy_dir is not None:
        argv += ["--prompt-accuracy-dir", str(prompt_accuracy_dir)]
    return [*argv, "--num-images", str(num_images), "--batch-size", str(batch_size), "--seed", str(seed),
            "--threads", str(threads), "--out", str(out)]  # fmt: skip


def run_chain(chain: list[Step], plan: RunSettings) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if plan.jobs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    logs = plan.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for step in chain:
        if step.done.exists():
            print(f"[bench] {step.name}: done before, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        log = logs / f"{step.name}.log"
        with log.open("w") as fh:
            fh.write("$ " + shlex.join([sys.executable, *step.argv]) + "\n")
            fh.flush()
            rc = subprocess.run([sys.executable, *step.argv], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT).returncode
        step.seconds = time.perf_counter() - t0
        if rc != 0 or not step.done.exists():
            raise RuntimeError(f"[bench] step {step.name} failed (exit {rc}); see {log}")
        print(f"[bench] {step.name}: {step.seconds:.0f} s", flush=True)


def run_chains(work: list[list[Step]], plan: RunSettings) -> None:
    """Run the chains ``plan.jobs`` at a time, in list order; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
        for fut in [pool.submit(run_chain, c, plan) for c in work]:
            fut.result()


def publish(text: str, results: Path, key: str, title: str, plots: list[Path]) -> None:
    """Replace the ``key`` section of RESULTS.md (between its markers; appended under ``title`` the first time) and
    copy the plots beside it. Text outside the markers (our reading of a run) is kept."""
    import shutil

    for plot in plots:
        shutil.copyfile(plot, results.parent / plot.name)
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    old = results.read_text() if results.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    results.write_text(new)


# -- several training seeds per cell: mean ± spread, and when a difference is called ---------------------------------
def seed_summary(reports: list[dict], metrics: tuple[str, ...] = ("fid", "prompt_accuracy")
                 ) -> dict[str, dict[int, tuple[float, float, float, float]]]:  # fmt: skip
    """{metric: {steps: (mean, sample std, min, max)}} over the seeds' report.json dicts (std 0 for one seed)."""
    import statistics

    out: dict = {}
    for metric in metrics:
        per_steps: dict[int, list[float]] = {}
        for report in reports:
            for row in report["results"]:
                value = row["fid"] if metric == "fid" else row["scores"].get(metric)
                if value is not None:
                    per_steps.setdefault(int(row["steps"]), []).append(float(value))
        out[metric] = {s: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, min(v), max(v))
                       for s, v in sorted(per_steps.items())}  # fmt: skip
    return out


def spread_verdict(a: tuple[float, ...], b: tuple[float, ...]) -> str:
    """'differs' when |mean a - mean b| exceeds std a + std b, else 'within spread'; '(ranges apart)' is added when
    every seed of one is better than every seed of the other (a collapse in one seed inflates its std, not this)."""
    call = "differs" if abs(a[0] - b[0]) > a[1] + b[1] else "within spread"
    return call + (" (ranges apart)" if a[3] < b[2] or b[3] < a[2] else "")
