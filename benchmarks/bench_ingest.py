"""Ingestion and lookup throughput of the UsGaapStore, for benchmarks/RESULTS.md (issue 4).

Builds a corpus of at least N triplets from the real sec-fetcher CSVs in ../shared/data (copies
under new tickers, in subfolders, in a temp dir), then, in a fresh child process per
measurement (so peak RSS is that run's own):

1. ingestion triplets/s: `UsGaapStore.ingest_us_gaap_csvs(corpus, db)` end to end (files ->
   database -> pairs -> embeddings -> scalers -> PCA -> triplets), wall clock, for
   SQLite + embedded DataStore and for MariaDB + our WebSocket server;
2. re-ingestion of the unchanged corpus (must do nothing);
3. `read_cells` (1M random indices), `read_cell_range` (full scan) and
   `batch_lookup_by_indices` (300k random indices) cells/s;
4. peak RSS of the child (ru_maxrss), and of the largest of its own helper processes (the
   CSV worker, the fact readers; sampled from /proc), with their CPU seconds.

The embedding cache of each fresh store is warmed first from a 4-file ingest of the same pairs
(the steady state: unchanged pairs are never re-embedded); the cold embedding time is reported
separately, since it depends on the number of pairs (~1k here), not on the number of triplets.

Run: `.venv/bin/python benchmarks/bench_ingest.py [--triplets 2000000] [--also 10000000]
[--backends embedded,mariadb-ws] [--repeat 5]`. `--repeat N` measures each embedded corpus N
times (fresh database, copy of the warmed store) and reports every rate and the median.
MariaDB needs NARRATIVE_TEST_MYSQL_URL (scripts/services.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_CSVS = (
    Path(os.environ.get("NARRATIVE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "sec-fetcher-csvs"
)
FILES_PER_FOLDER = 500
PHASE_TIMEOUT_S = 1800


def facts_per_source_file(sources: list[Path]) -> list[int]:
    """Facts the reader takes from each real CSV (no taxonomy: every concept column)."""
    from narrative_pipeline.readers import read_sec_fetcher_csv

    return [len(read_sec_fetcher_csv(path, None).facts) for path in sources]


def build_corpus(target: int, root: Path) -> dict:
    """Copies of the real CSVs under new tickers until the corpus holds >= `target` facts."""
    sources = sorted(SHARED_CSVS.glob("*.csv"))
    if not sources:
        raise SystemExit(f"no CSVs in {SHARED_CSVS}: the benchmark needs the shared real files")
    counts = facts_per_source_file(sources)
    n_files = math.ceil(target / (sum(counts) / len(counts)))
    marker = root / "corpus.json"
    if marker.exists() and json.loads(marker.read_text())["n_files"] == n_files:
        return json.loads(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    total = 0
    for i in range(n_files):
        k = i % len(sources)
        folder = root / f"part{i // FILES_PER_FOLDER:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[k], folder / f"{sources[k].stem}{i:05d}.csv")
        total += counts[k]
    info = {"n_files": n_files, "facts": total, "target": target, "root": str(root)}
    marker.write_text(json.dumps(info))
    return info


def start_ws_server(path: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "narrative_pipeline.store.serve", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"store server did not start: {line!r}")
    return process, int(line.strip().rsplit(":", 1)[1].split("/")[0])


def fresh_mysql_url(base_url: str) -> str:
    """Empty the benchmark's tables in the test database (DbUsGaap recreates them)."""
    import sqlalchemy as sa

    engine = sa.create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=0"))
        for (table,) in conn.execute(sa.text("SHOW TABLES")).fetchall():
            conn.execute(sa.text(f"DROP TABLE `{table}`"))
        conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=1"))
    engine.dispose()
    return base_url


def rss_mib() -> float:
    """Peak resident set of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def helper_cpu_seconds() -> float:
    """CPU seconds of the CSV worker and fact-reader processes this run started (all ended
    by now; not in ingest_cpu_seconds). Their memory is sampled by PeakSampler instead:
    RUSAGE_CHILDREN's ru_maxrss also counts the parent's pages a child held between fork and
    exec, so it reports the parent's size, not the helper's."""
    time.sleep(0.5)  # their exits are awaited by daemon threads
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(usage.ru_utime + usage.ru_stime, 2)


def children_peak_mib() -> float:
    """The largest VmHWM (peak RSS since exec) among this process's living children."""
    me, peak = str(os.getpid()), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] != me:  # ppid
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, IndexError, ValueError):
            continue  # the child ended meanwhile
    return round(peak, 1)


def rss_split_mib() -> dict[str, float]:
    """Current anonymous vs file-backed resident memory: the store's memory map is file-backed
    (the kernel can drop it), anonymous memory is what the process itself holds."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            fields[name.lower() + "_mib"] = round(int(value.split()[0]) / 1024, 1)
    return fields


class PeakSampler:
    """Samples RssAnon/RssFile, and the helper processes' peak RSS, every 20 ms in a thread;
    keeps the peaks of each named phase."""

    def __init__(self) -> None:
        import threading

        self.phase = "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            peaks = self.peaks.setdefault(self.phase, {})
            sample = {**rss_split_mib(), "helpers_peak_mib": children_peak_mib()}
            for name, value in sample.items():
                peaks[name] = max(peaks.get(name, 0.0), value)

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def open_handle(args: argparse.Namespace):
    """The store the parent prepared: the embedded file, or the server it started."""
    if args.server_port:
        from narrative_pipeline.store import DataStoreWsClient

        return DataStoreWsClient("127.0.0.1", args.server_port)
    from narrative_pipeline.store import DataStore

    return DataStore(Path(args.work) / "store.bin")


def child(args: argparse.Namespace) -> dict:
    """One phase in this (fresh) process: `warm` fills the embedding cache, `measure` times."""
    from narrative_pipeline.db import DbUsGaap
    from narrative_pipeline.us_gaap_store import UsGaapStore

    handle = open_handle(args)
    work = Path(args.work)
    try:
        if args.phase == "warm":  # the same pairs from the 4 real files, in a separate database
            warm = UsGaapStore(handle).ingest_us_gaap_csvs(
                SHARED_CSVS, DbUsGaap(f"sqlite:///{work / 'warm.sqlite'}"), make_plots=False
            )
            return {
                "cold_embedding_seconds": warm.timings.get("embeddings"),
                "cold_embedded_texts": warm.embedding_report.embedded,
                "warmup_peak_rss_mib": round(rss_mib(), 1),
            }
        db_url = args.db_url or f"sqlite:///{work / 'narrative.sqlite'}"
        db = DbUsGaap(db_url)
        store = UsGaapStore(handle)
        result: dict = {}
        sampler = PeakSampler()
        # The same work as one ingest_us_gaap_csvs call, in its two halves so that each half's
        # memory peak is seen: files -> database, then steps 2-6 from the database.
        sampler.phase = "files_to_db"
        started, cpu_started = time.perf_counter(), time.process_time()
        files = store.ingest_us_gaap_csvs(args.corpus, db, downstream=False)
        files_cpu = time.process_time() - cpu_started
        sampler.phase = "build_store"
        report = store.build_from_db(db, force=True, make_plots=False)
        wall = time.perf_counter() - started
        # CPU seconds of this process, all threads (the machine is shared: wall time includes
        # waiting for other processes' work, CPU time does not).
        cpu = time.process_time() - cpu_started
        sampler.phase = "after"
        result.update(
            triplets=report.triplets,
            pairs=report.pairs,
            files=files.files_loaded,
            ingest_seconds=round(wall, 2),
            ingest_triplets_per_s=round(report.triplets / wall),
            ingest_cpu_seconds=round(cpu, 2),
            files_to_db_cpu_seconds=round(files_cpu, 2),
            ingest_triplets_per_cpu_s=round(report.triplets / cpu),
            step_seconds={**files.timings, **report.timings},
            embedding_cache_hits=report.embedding_report.cache_hits,
            embedded_in_run=report.embedding_report.embedded,
            rss_after_ingest_mib=round(rss_mib(), 1),
            phase_peaks_mib=sampler.stop(),
        )
        started = time.perf_counter()
        again = store.ingest_us_gaap_csvs(args.corpus, db, make_plots=False)
        result["reingest_seconds"] = round(time.perf_counter() - started, 2)
        result["reingest_files_loaded"] = again.files_loaded
        result["reingest_rebuilt"] = again.downstream_ran
        result.update(measure_reads(handle))
        result["peak_rss_mib"] = round(rss_mib(), 1)
        result.update({f"end_{k}": v for k, v in rss_split_mib().items()})
        result["helper_cpu_seconds"] = helper_cpu_seconds()
        return result
    finally:
        close = getattr(handle, "close", None)
        if close:
            close()


def measure_reads(handle) -> dict:
    """Vectorised and object reads, each on a fresh facade (cold chunk cache, chunks read from the store)."""
    from narrative_pipeline.us_gaap_store import UsGaapStore

    n = UsGaapStore(handle).get_triplet_count()
    rng = np.random.default_rng(0)
    out = {}
    store = UsGaapStore(handle)
    idx = rng.integers(0, n, size=1_000_000)
    started = time.perf_counter()
    store.read_cells(idx)
    out["read_cells_per_s"] = round(len(idx) / (time.perf_counter() - started))
    store = UsGaapStore(handle)
    started = time.perf_counter()
    for start in range(0, n, 1 << 20):
        store.read_cell_range(start, start + (1 << 20))
    out["read_cell_range_per_s"] = round(n / (time.perf_counter() - started))
    store = UsGaapStore(handle)
    idx = rng.integers(0, n, size=300_000)
    started = time.perf_counter()
    cells = store.batch_lookup_by_indices(idx)
    out["batch_lookup_per_s"] = round(len(idx) / (time.perf_counter() - started))
    out["round_trip_exact_on_sample"] = all(
        c.scaler.transform([[c.unscaled_value]])[0][0] == c.scaled_value for c in cells[:2000]
    )
    return out


def run_phase(phase: str, corpus: dict, work: Path, port: int | None, db_url: str | None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        phase,
        "--corpus",
        corpus["root"],
        "--work",
        str(work),
    ]
    command += ["--server-port", str(port)] if port else []
    command += ["--db-url", db_url] if db_url else []
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=PHASE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{phase} phase did not finish in {PHASE_TIMEOUT_S} s") from exc
    lines = [ln for ln in completed.stdout.splitlines() if ln.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{phase} phase failed: {completed.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_backend(corpus: dict, backend: str, workdir: Path, repeat: int = 1) -> dict:
    """Warm-up child then measuring child over one fresh store (and database). With `repeat`
    (embedded only) the measurement runs that many times, each on a fresh database and a copy
    of the warmed store; the row holds the first run and every run's ingestion figures."""
    work = workdir / f"run_{backend}_{corpus['facts']}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server, port, db_url = None, None, None
    if backend == "mariadb-ws":
        server, port = start_ws_server(work / "store.bin")
        db_url = fresh_mysql_url(os.environ["NARRATIVE_TEST_MYSQL_URL"])
    row = {"backend": backend, "corpus_files": corpus["n_files"], "corpus_facts": corpus["facts"]}
    try:
        row.update(run_phase("warm", corpus, work, port, db_url))
        if backend == "embedded" and repeat > 1:
            row.update(repeat_measure(corpus, work, repeat))
        else:
            row.update(run_phase("measure", corpus, work, port, db_url))
    except RuntimeError as exc:
        row["error"] = str(exc)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return row


def repeat_measure(corpus: dict, work: Path, repeat: int) -> dict:
    """`repeat` measurements from the same warmed store: the first run's full row, plus the
    ingestion rate of each run and their median (the machine is shared: one run can be slow)."""
    warmed = work / "store.warm.bin"
    shutil.copyfile(work / "store.bin", warmed)
    runs = []
    for _ in range(repeat):
        for leftover in work.glob("narrative.sqlite*"):
            leftover.unlink()
        shutil.copyfile(warmed, work / "store.bin")
        runs.append(run_phase("measure", corpus, work, None, None))
    rates = sorted(r["ingest_triplets_per_s"] for r in runs)
    return {
        **runs[0],
        "repeat_ingest_triplets_per_s": [r["ingest_triplets_per_s"] for r in runs],
        "repeat_step_seconds": [r["step_seconds"] for r in runs],
        "median_ingest_triplets_per_s": rates[len(rates) // 2],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=2_000_000, help="corpus size (facts)")
    parser.add_argument(
        "--also", type=int, nargs="*", default=[], help="further corpus sizes (embedded only)"
    )
    parser.add_argument("--backends", default="embedded,mariadb-ws")
    parser.add_argument(
        "--workdir", default=None, help="where corpora and stores go (default: a temp dir)"
    )
    parser.add_argument("--keep-corpus", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measurements per embedded corpus (median kept)"
    )
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument(
        "--child", dest="phase", choices=("warm", "measure"), help=argparse.SUPPRESS
    )
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--server-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(child(args)), flush=True)
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_"))
    results = {"machine": f"{platform.node()} {os.cpu_count()} cpus", "runs": []}
    plan = [(args.triplets, b) for b in args.backends.split(",")] + [
        (n, "embedded") for n in args.also
    ]
    try:
        for target, backend in plan:
            if backend == "mariadb-ws" and not os.environ.get("NARRATIVE_TEST_MYSQL_URL"):
                row = {
                    "backend": backend,
                    "skipped": "NARRATIVE_TEST_MYSQL_URL unset (scripts/services.sh start)",
                }
            else:
                corpus = build_corpus(target, workdir / f"corpus_{target}")
                row = run_backend(corpus, backend, workdir, args.repeat)
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
    finally:
        if not args.keep_corpus and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
