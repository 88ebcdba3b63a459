"""Memory and throughput of ``segdash apply`` on a large image (a benchmark, not a test).

Trains a model with the dashboard's default settings (``basic`` features, sigma 0.5..16, on
RGB: 97 features per pixel; random forest) on a small crop, writes an RGB image of
``--size`` x ``--size`` pixels (default 8192: its features alone would take ~19 GB) as a
tiled, compressed TIFF, then runs ``segdash apply`` on it

1. with the local scheduler (one process, threads), and
2. on a ``dask.distributed.LocalCluster`` of two worker processes (one thread each),
   started in a process of its own, the client connecting with ``--scheduler``,

sampling the resident memory (RSS) of every process involved (client, scheduler, nannies,
workers) every 50 ms. It reports the peak of their sum, the sum of each process's own
peak (``VmHWM``, an upper bound that needs no sampling luck), the wall time and the
throughput in megapixels per second, and checks that both runs wrote identical labels.

Usage::

    .venv/bin/python benchmarks/batch_memory.py              # 8192 x 8192, both schedulers
    .venv/bin/python benchmarks/batch_memory.py --size 2048  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

LIMIT_BYTES = 3 * 2**30
#: The last run's throughput, read by ``benchmarks/run.py`` for its list of targets.
RESULT_FILE = Path(tempfile.gettempdir()) / "segdash-bench-batch.json"


# -- data ----------------------------------------------------------------------------------

def _texture(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB picture of fine-grained discs on a coarse background, and painted strokes."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    fine = rng.normal(0, 1, (size, size, 3))
    coarse = ndi.gaussian_filter(rng.normal(0, 1, (size, size, 3)), (4, 4, 0))
    coarse *= fine.std() / coarse.std()
    yy, xx = np.mgrid[:size, :size]
    period = size // 4
    disc = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2
            < (period / 3) ** 2)
    img = np.clip(np.where(disc[:, :, None], fine, coarse) * 30 + 128, 0, 255).astype(np.uint8)
    labels = np.zeros((size, size), np.uint8)
    labels[(yy % period == period // 2) & disc] = 2  # lines through the discs
    labels[(yy % period < 3) & ~disc] = 1           # lines along the background
    return img, labels


def prepare(workdir: Path, size: int) -> None:
    """Write ``model.skops`` and ``image.tif`` (run in a process of its own)."""
    import tifffile

    import segdash

    img, labels = _texture(512, seed=0)
    model = segdash.fit(img, labels)  # the dashboard's defaults
    model.save(workdir / "model.skops")
    block, _ = _texture(1024, seed=1)
    tile = 256

    def tiles():
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                by, bx = (y // 1024 + x // 1024) % 2, (y * 7 // 1024) % 3
                src = np.rot90(block, by + bx)
                yield np.ascontiguousarray(src[y % 1024:y % 1024 + tile,
                                               x % 1024:x % 1024 + tile])

    tifffile.imwrite(workdir / "image.tif", data=tiles(), shape=(size, size, 3),
                     dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     compression="zlib", bigtiff=True)
    print(json.dumps({"features": len(model.feature_names), "halo": model.halo,
                      "classifier": model.classifier}))


# -- measuring -----------------------------------------------------------------------------

class TreeMemory:
    """Samples the summed RSS of process trees (roots and all their descendants)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.roots: list[psutil.Process] = []
        self.peak_sum = 0
        self.hwm: dict[int, int] = {}
        self.cpu: dict[int, float] = {}  # CPU seconds, last seen, per process
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def add(self, pid: int) -> None:
        self.roots.append(psutil.Process(pid))

    def _processes(self) -> list[psutil.Process]:
        out = []
        for root in self.roots:
            try:
                out += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return out

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self._processes():
                try:
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), t.user + t.system)
                    with open(f"/proc/{p.pid}/status") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                kb = int(line.split()[1])
                                self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), kb * 1024)
                    if p.pid not in self.names:
                        cmd = " ".join(p.cmdline()[1:]).replace("\n", " ")
                        self.names[p.pid] = f"pid {p.pid}: {cmd[:70]}"
                except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                    pass
            self.peak_sum = max(self.peak_sum, total)
            time.sleep(interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


_CLUSTER = """
import sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address="127.0.0.1:0", silence_logs=40)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()   # until the benchmark closes our stdin
cluster.close()
"""


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its descendants."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_apply(workdir: Path, out: str, scheduler: str | None, cluster_pid: int | None
              ) -> dict:
    cmd = [sys.executable, "-m", "segdash.cli", "apply", str(workdir / "model.skops"),
           str(workdir / "image.tif"), "--out", str(workdir / out), "--quiet", "--overwrite"]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    load_before = os.getloadavg()[0]
    cluster_cpu = _tree_cpu(cluster_pid) if cluster_pid else 0.0
    with TreeMemory() as mem:
        if cluster_pid:
            mem.add(cluster_pid)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mem.add(proc.pid)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"segdash apply failed ({proc.returncode}):\n{stdout}\n{stderr}")
    # The client's CPU time (it has exited: recorded by the sampler) and the cluster's delta.
    cpu = mem.cpu.get(proc.pid, 0.0)
    if cluster_pid:
        cpu += _tree_cpu(cluster_pid) - cluster_cpu
    return {"wall_s": wall, "cpu_s": cpu, "load": (load_before, os.getloadavg()[0]),
            "peak_sum_rss": mem.peak_sum, "sum_of_peaks": sum(mem.hwm.values()),
            "processes": {mem.names.get(pid, f"pid {pid}"): hwm for pid, hwm in mem.hwm.items()},
            "summary": stdout.strip().splitlines()[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side in pixels")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.size)
        return 0

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="segdash-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "image.tif").exists():
        t = time.perf_counter()
        info = subprocess.run([sys.executable, __file__, "--prepare", str(workdir), "--size",
                               str(args.size)], check=True, capture_output=True, text=True)
        print(f"prepared model and {args.size}x{args.size} RGB TIFF in "
              f"{time.perf_counter() - t:.0f} s: {info.stdout.strip()}")
    megapixels = args.size * args.size / 1e6
    results = {}
    if not args.skip_local:
        results["local scheduler (threads)"] = run_apply(workdir, "out_local", None, None)
    if not args.skip_cluster:
        cluster = subprocess.Popen([sys.executable, "-c", _CLUSTER], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        address = cluster.stdout.readline().strip()
        try:
            results["LocalCluster (2 processes x 1 thread)"] = run_apply(
                workdir, "out_cluster", address, cluster.pid)
        finally:
            cluster.stdin.close()
            cluster.wait(timeout=60)

    print(f"\nsegdash apply on a {args.size}x{args.size} RGB image ({megapixels:.1f} MP), "
          f"{psutil.cpu_count()} cores (load avg: the machine's 1-minute load before->after; "
          "above the core count, other processes took CPU and wall times are inflated)")
    print(f"{'scheduler':38} {'wall s':>7} {'MP/s':>6} {'CPU s':>7} {'peak RSS (sum)':>15} "
          f"{'sum of peaks':>13} {'load avg':>10}")
    for name, r in results.items():
        print(f"{name:38} {r['wall_s']:7.1f} {megapixels / r['wall_s']:6.3f} "
              f"{r['cpu_s']:7.0f} {r['peak_sum_rss'] / 2**30:12.2f} GB "
              f"{r['sum_of_peaks'] / 2**30:10.2f} GB {r['load'][0]:4.1f}->{r['load'][1]:4.1f}")
        print(f"    {r['summary']}")
        for proc, hwm in sorted(r["processes"].items(), key=lambda kv: -kv[1]):
            print(f"      {hwm / 2**30:5.2f} GB  {proc}")
    ok = all(r["peak_sum_rss"] < LIMIT_BYTES for r in results.values())
    if len(results) == 2:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        a, b = (np.asarray(Image.open(workdir / d / "image_labels.png"))
                for d in ("out_local", "out_cluster"))
        same = np.array_equal(a, b)
        print(f"labels identical on both schedulers: {same}; classes found: "
              f"{np.unique(a).tolist()}")
        ok = ok and same
    print(f"peak RSS under {LIMIT_BYTES / 2**30:.0f} GB: "
          f"{all(r['peak_sum_rss'] < LIMIT_BYTES for r in results.values())}")
    # for `make bench`'s list of targets
    RESULT_FILE.write_text(json.dumps({
        "size": args.size, "load": os.getloadavg()[:1],
        "mp_per_s": {name: megapixels / r["wall_s"] for name, r in results.items()}}))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
