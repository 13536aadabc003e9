"""Fault-injection soak: a sweep of short runs under chaos, re-run until done, checked against a clean one.

    python scripts/soak.py                      # full size: 105 runs (as root: a size-limited tmpfs)
    python scripts/soak.py --seeds 2 --estimators rloo,st --seconds 20    # a short one

What it does:

1. A clean reference: the same sweep, without chaos, into its own folder (``<folder>/reference``).
2. The sweep under chaos, into ``<folder>/chaos`` (a tmpfs of ``--tmpfs-mb`` MiB mounted there when run as
   root, so that the disk can really fill): a chaos thread sends SIGKILL, SIGTERM and SIGINT to random joblib
   workers at random times, fills the folder's file system for a while (a file written until ENOSPC, removed
   a little later) and corrupts a random checkpoint (truncated, or one byte flipped). Whenever the sweep
   stops (a worker killed, a run that could not write), the same sweep command is run again, as a user
   would; after ``--seconds`` the chaos stops and the sweep is re-run until it exits 0.
3. Checks: every configuration has exactly one complete ``ok`` summary; its ``metrics.csv`` equals the
   reference's byte for byte; every study checkpoint (``checkpoint.steps``) loads and holds the
   reference's parameters (``params_digest``); ``python -m bench.check`` passes on the folder.

It prints the figures (runs, kills of each kind, disk-full episodes, corrupted checkpoints and how many were
refused, sweep attempts, runs that resumed, runs lost, metrics files that differ) and writes them to
``<folder>/soak.json``; the exit code is 0 when every check passed. ``tests/run/test_soak.py`` runs a short
version.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import checkpoint  # noqa: E402 - after the repository is importable

ESTIMATORS = ("score_function", "rloo", "st", "gumbel", "gumbel_st", "reinmax", "exact")
STUDY_STEPS = (0, 200, 400)  # checkpoint.steps
RUN = (
    "task=toy",
    "steps=600",
    "probe.every=100",
    "probe.draws=4",
    "log_every=10",
    "threads=1",
    "progress=false",
    "checkpoint.every=50",
    f"checkpoint.steps=[{','.join(str(step) for step in STUDY_STEPS)}]",
)
KILLS = ("SIGKILL", "SIGTERM", "SIGINT")
ACTIONS = (*KILLS, "disk_full", "corrupt")


def sweep_command(folder: Path, estimators: list[str], seeds: int, jobs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench",
        "-m",
        *RUN,
        f"estimator={','.join(estimators)}",
        f"seed={','.join(str(seed) for seed in range(seeds))}",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={jobs}",
        f"hydra.sweep.dir={folder}",
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}


def children(pid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append((int(entry.name), command))
    return found


def workers(sweep: subprocess.Popen | None) -> list[int]:
    """The joblib (loky) worker processes of a running sweep."""
    if sweep is None or sweep.poll() is not None:
        return []
    return [pid for pid, command in children(sweep.pid) if b"popen_loky_posix" in command]


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Chaos:
    """Random faults against the sweep in ``folder`` (the module's docstring); ``counts`` says how many."""

    folder: Path
    rng: random.Random
    interval: tuple[float, float] = (0.3, 1.5)
    actions: tuple[str, ...] = ACTIONS  # disk_full only where the folder's file system is size-limited
    sweep: subprocess.Popen | None = None
    attempt_started: float = 0.0  # time.time() when the current sweep attempt started
    counts: Counter = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.loop, daemon=True)
        thread.start()
        return thread

    def loop(self) -> None:
        order: list[str] = []
        while not self.stopped.wait(self.rng.uniform(*self.interval)):
            if not order:  # every kind of fault in turn, in a random order
                order = list(self.actions)
                self.rng.shuffle(order)
            for action in order:  # the first one that can be done now (a kill needs a run in progress)
                done = self.act(action)
                if done:
                    order.remove(action)
                    self.counts[action] += 1
                    self.log.append(f"{time.strftime('%H:%M:%S')} {action} {done}")
                    break

    def training(self) -> bool:
        """Whether the sweep's runs are training now: a checkpoint written in the last second of this
        attempt (a signal to a worker that is still starting up hits no run)."""
        since = max(self.attempt_started, time.time() - 1.0)
        for path in self.folder.glob("*/checkpoints/*.json"):
            try:
                if path.stat().st_mtime > since:
                    return True
            except OSError:
                continue
        return False

    def act(self, action: str) -> str | None:
        if action in KILLS:
            pids = workers(self.sweep)
            if not pids or not self.training():
                return None
            pid = self.rng.choice(pids)
            try:
                os.kill(pid, getattr(signal, action))
            except ProcessLookupError:
                return None
            return f"worker {pid}"
        if action == "corrupt":
            return self.corrupt()
        return self.fill() if self.training() else None

    def corrupt(self) -> str | None:
        """Damage the newest checkpoint of a random run that stopped before it finished: the one it would
        resume from. (A run that is still going would not read its checkpoints again.)"""
        idle = []
        for run in {path.parent.parent for path in self.folder.glob("*/checkpoints/*.json")}:
            saved = checkpoint.list_checkpoints(run)
            try:
                if saved and not finished(run) and time.time() - saved[-1].stat().st_mtime > 5:
                    idle.append(saved[-1])
            except OSError:
                continue
        if not idle:
            return None
        path = self.rng.choice(sorted(idle))
        try:
            data = bytearray(path.read_bytes())
            if self.rng.random() < 0.5 or len(data) < 2:
                data = data[: self.rng.randrange(len(data))]  # truncated
                how = f"truncated to {len(data)} bytes"
            else:
                index = self.rng.randrange(len(data))
                data[index] ^= 0xFF  # one byte flipped
                how = f"byte {index} flipped"
            path.write_bytes(bytes(data))
        except OSError:  # removed by a rotation meanwhile, or the disk is full
            return None
        return f"{path.relative_to(self.folder)}: {how}"

    def fill(self) -> str | None:
        filler = self.folder / f"filler-{self.rng.randrange(10**6)}"
        written = 0
        try:
            with open(filler, "wb") as stream:
                block = b"\0" * (1 << 20)
                while written < (1 << 30) and not self.stopped.is_set():
                    stream.write(block)
                    stream.flush()
                    written += len(block)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                filler.unlink(missing_ok=True)
                return None
        else:  # not a size-limited file system: nothing to fill
            filler.unlink(missing_ok=True)
            return None
        self.stopped.wait(self.rng.uniform(0.5, 2.0))  # full for a while
        filler.unlink(missing_ok=True)
        return f"full after {written >> 20} MiB"


def finished(run: Path) -> bool:
    try:
        return json.loads((run / "summary.json").read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def run_sweep(command: list[str], log: Path, chaos: Chaos | None = None, timeout: float = 900) -> int:
    """Run the sweep once (in its own process group) and wait until every process of it has ended; a sweep
    still running after ``timeout`` seconds is ended (exit code -9)."""
    with log.open("a") as output:
        output.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(command[3:])}\n")
        output.flush()
        sweep = subprocess.Popen(
            command, cwd=ROOT, env=environment(), stdout=output, stderr=output, start_new_session=True
        )
        if chaos is not None:
            chaos.sweep, chaos.attempt_started = sweep, time.time()
        try:
            code = sweep.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(sweep.pid, signal.SIGKILL)
            code = sweep.wait()
            output.write(f"=== the sweep ran over {timeout} s: ended\n")
        if chaos is not None:
            chaos.sweep = None
    deadline = time.monotonic() + 30  # joblib's workers end with it; give them time, then end them
    while group_alive(sweep.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(sweep.pid):
        os.killpg(sweep.pid, signal.SIGKILL)
        while group_alive(sweep.pid):
            time.sleep(0.1)
    return code


def run_folders(folder: Path) -> dict[str, Path]:
    return {path.parent.name: path.parent for path in folder.glob("*/.hydra")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(chaos_folder: Path, reference_folder: Path, steps: list[int]) -> dict[str, Any]:
    """The checks of the module's docstring; returns the figures and the problems found."""
    expected, found = run_folders(reference_folder), run_folders(chaos_folder)
    problems: list[str] = [f"{name}: not in the reference" for name in sorted(set(found) - set(expected))]
    figures: Counter = Counter()
    for name, reference in sorted(expected.items()):
        run = found.get(name)
        if run is None:
            problems.append(f"{name}: missing")
            figures["runs_lost"] += 1
            continue
        summaries = list(run.glob("summary.json"))
        try:
            summary = json.loads((run / "summary.json").read_text())
        except (OSError, ValueError) as error:
            problems.append(f"{name}: no complete summary ({error})")
            figures["runs_lost"] += 1
            continue
        if len(summaries) != 1 or summary.get("status") != "ok":
            problems.append(f"{name}: status {summary.get('status')}: {summary.get('error')}")
            figures["runs_lost"] += 1
            continue
        figures["runs_ok"] += 1
        figures["runs_resumed"] += summary.get("resumes", 0) > 0
        figures["resumes"] += summary.get("resumes", 0)
        if (run / "metrics.csv").read_bytes() != (reference / "metrics.csv").read_bytes():
            problems.append(f"{name}: metrics.csv differs from the reference's")
            figures["metrics_differing"] += 1
        reference_digest = json.loads((reference / "summary.json").read_text())["config_digest"]
        for step in steps:
            path = checkpoint.checkpoint_path(run, step)
            theirs = checkpoint.sidecar_path(checkpoint.checkpoint_path(reference, step))
            try:
                state = checkpoint.load(path, reference_digest)
            except checkpoint.CheckpointError as error:
                problems.append(f"{name}: study checkpoint at step {step}: {error}")
                figures["study_checkpoints_bad"] += 1
                continue
            if state["params_digest"] != json.loads(theirs.read_text())["params_digest"]:
                problems.append(f"{name}: study checkpoint at step {step} holds other parameters")
                figures["study_checkpoints_bad"] += 1
        if len(checkpoint.list_checkpoints(run, "latest")) > checkpoint.KEPT_LATEST:
            problems.append(f"{name}: more than {checkpoint.KEPT_LATEST} rotating checkpoints")
        leftovers = [path.name for path in run.rglob("*.tmp")]
        if leftovers:
            problems.append(f"{name}: temporary files left: {', '.join(leftovers)}")
    check = subprocess.run(
        [sys.executable, "-m", "bench.cli.check", str(chaos_folder)],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        problems.append(f"python -m bench.check failed (exit {check.returncode}): {check.stdout[-2000:]}")
    figures["runs"] = len(expected)
    return {"figures": dict(figures), "bench_check_exit": check.returncode, "problems": problems}


def mount_tmpfs(folder: Path, megabytes: int) -> bool:
    """A size-limited tmpfs at ``folder`` (root only); False when it cannot be mounted."""
    if os.geteuid() != 0 or megabytes <= 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return mounted.returncode == 0


def soak(
    folder: Path,
    estimators: list[str],
    seeds: int,
    seconds: float,
    seed: int = 0,
    jobs: int = 2,
    tmpfs_mb: int = 64,
    max_attempts: int = 60,
    interval: tuple[float, float] = (0.3, 1.5),
) -> dict[str, Any]:
    """Run the soak in ``folder`` (see the module's docstring); returns its report (also ``soak.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    reference, chaotic, log = folder / "reference", folder / "chaos", folder / "sweeps.log"
    started = time.monotonic()
    code = run_sweep(sweep_command(reference, estimators, seeds, jobs), log)
    if code != 0:
        raise RuntimeError(f"the clean reference sweep failed (exit {code}); see {log}")
    reference_time = time.monotonic() - started
    mounted = mount_tmpfs(chaotic, tmpfs_mb)
    actions = ACTIONS if mounted else tuple(action for action in ACTIONS if action != "disk_full")
    chaos = Chaos(chaotic, random.Random(seed), interval, actions)
    chaotic.mkdir(parents=True, exist_ok=True)
    command = sweep_command(chaotic, estimators, seeds, jobs)
    exits: list[int] = []
    try:
        chaos_started = time.monotonic()
        thread = chaos.start()
        while len(exits) < max_attempts:
            if time.monotonic() - chaos_started > seconds and not chaos.stopped.is_set():
                chaos.stopped.set()
                thread.join()
            exits.append(run_sweep(command, log, None if chaos.stopped.is_set() else chaos))
            if chaos.stopped.is_set() and exits[-1] == 0:
                break
        chaos.stopped.set()
        thread.join()
        chaos_time = time.monotonic() - chaos_started
        for filler in chaotic.glob("filler-*"):
            filler.unlink()
        result = verify(chaotic, reference, list(STUDY_STEPS))
    finally:
        if mounted:
            kept = folder / "chaos-final"  # the tmpfs goes with the unmount: keep a copy of what it held
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(chaotic, kept, symlinks=True)
            subprocess.run(["umount", str(chaotic)], check=False)
            shutil.rmtree(chaotic, ignore_errors=True)
            kept.rename(chaotic)
    figures = result["figures"]
    figures.update({f"sent_{name}": chaos.counts[name] for name in KILLS})
    # Each checkpoint a run refused to load (corrupt, truncated) says so on stderr, in the sweeps' log.
    figures["checkpoints_refused"] = log.read_text().count("[resume] checkpoint ")
    if figures["checkpoints_refused"] < chaos.counts["corrupt"]:  # each one is the newest of a stopped run
        result["problems"].append(
            f"{chaos.counts['corrupt']} checkpoints corrupted, {figures['checkpoints_refused']} refused"
        )
    figures.update(
        disk_full=chaos.counts["disk_full"],
        checkpoints_corrupted=chaos.counts["corrupt"],
        sweep_attempts=len(exits),
        retries=len(exits) - 1,
        runs_lost=figures.get("runs_lost", 0),
        metrics_differing=figures.get("metrics_differing", 0),
    )
    report = {
        **result,
        "exits": exits,
        "tmpfs_mb": tmpfs_mb if mounted else None,
        "reference_seconds": round(reference_time, 1),
        "chaos_seconds": round(chaos_time, 1),
        "chaos_log": chaos.log,
        "ok": not result["problems"] and exits[-1] == 0,
    }
    (folder / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="where to work (default: a new temporary folder)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="comma-separated (toy task)")
    parser.add_argument("--seeds", type=int, default=15, help="seeds per estimator (default 15: 105 runs)")
    parser.add_argument("--seconds", type=float, default=120, help="how long the chaos lasts")
    parser.add_argument("--seed", type=int, default=0, help="of the chaos's random choices")
    parser.add_argument("--jobs", type=int, default=2, help="joblib's n_jobs")
    parser.add_argument("--tmpfs-mb", type=int, default=64, help="size of the tmpfs (root; 0: none)")
    arguments = parser.parse_args()
    folder = arguments.folder or Path(tempfile.mkdtemp(prefix="soak-"))
    report = soak(
        folder,
        arguments.estimators.split(","),
        arguments.seeds,
        arguments.seconds,
        arguments.seed,
        arguments.jobs,
        arguments.tmpfs_mb,
    )
    figures = report["figures"]
    width = max(len(name) for name in figures)
    print(f"soak in {folder} ({'ok' if report['ok'] else 'FAILED'}):")
    for name in sorted(figures):
        print(f"  {name:<{width}}  {figures[name]}")
    print(f"  sweep exits: {report['exits']}; python -m bench.check: exit {report['bench_check_exit']}")
    for problem in report["problems"][:50]:
        print(f"  problem: {problem}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
