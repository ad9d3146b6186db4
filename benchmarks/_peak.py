"""This machine's FMA peak and how steady its cores and memory are, measured, for the benchmarks'
roofline and steadiness lines.

The sgemm rate (``_timing.sgemm_gflops``) is what a BLAS reaches, not what the cores can do: on
Zen 4 OpenVINO's 1x1 convolutions ran at 111% of numpy's 2048² sgemm. The ceiling no fp32 kernel
passes is the FMA units' peak, so it is measured here directly: a loop of independent fused
multiply-adds on registers (24 chains of AVX-512, or 12 of AVX2 FMA, more than latency × ports on
any x86 core we run on), on the same threads as the benchmark, compiled for this CPU by gcc
(``-march=native``). The same loop in windows of a few milliseconds (the line gives their length), and a read of a 16 MB buffer
(1.0-224's fp32 weights are 16.9 MB; within the L3 of the CPUs measured so far, so this is a cache
rate, not DRAM bandwidth), say whether the machine was steady while it was measured:
a shared host whose other tenants take a core or thrash the cache shows it as a long low tail.

Needs gcc with OpenMP and an x86 CPU with FMA; anything else returns None, and the lines say n/a.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass

#: What the lines say where the loop cannot be built.
UNAVAILABLE = "n/a (the loop needs gcc with OpenMP and an x86 CPU with FMA)"

_SOURCE = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define ACCS 24
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define LOAD _mm512_loadu_ps
#define STORE _mm512_storeu_ps
#define ISA "avx512"
#elif defined(__FMA__)
typedef __m256 vec;
#define LANES 8
#define ACCS 12
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define LOAD _mm256_loadu_ps
#define STORE _mm256_storeu_ps
#define ISA "avx2-fma"
#else
#error "this CPU has no FMA"
#endif
/* peak MODE THREADS WORK WINDOWS: the ISA, then one line per window: its rate (GFLOP/s for fma,
   GB/s for read) and its length in ms. read: WORK bytes, read PASSES times per window. */
#define PASSES 24
int main(int argc, char **argv) {
  if (argc != 5) return 2;
  int fma = strcmp(argv[1], "fma") == 0, threads = atoi(argv[2]), windows = atoi(argv[4]);
  long work = atol(argv[3]);
  long n = work / sizeof(float); /* read: floats in the buffer, whole blocks of LANES * ACCS */
  n -= n % (LANES * ACCS);
  float *buf = 0;
  if (!fma) {
    buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) return 3;
    for (long i = 0; i < n; i++) buf[i] = (float)(i & 1023);
  }
  double sink = 0;
  printf("%s\n", ISA);
  for (int w = 0; w < windows; w++) {
    int team = 1;
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+:sink)
    {
#pragma omp single
      team = omp_get_num_threads();
      vec acc[ACCS];
      float out[LANES];
      for (int k = 0; k < ACCS; k++) acc[k] = SET1((float)(k + omp_get_thread_num()));
      if (fma) {
        vec m = SET1(0.99999994f), c = SET1(1e-7f);
        for (long i = 0; i < work; i++) {
#pragma GCC unroll 24
          for (int k = 0; k < ACCS; k++) acc[k] = FMA(acc[k], m, c);
        }
      } else {
        /* each thread reads its own slice PASSES times: one barrier per window, as in the fma loop */
        long blocks = n / (LANES * ACCS), t = omp_get_thread_num(), nt = omp_get_num_threads();
        long lo = blocks * t / nt * (LANES * ACCS), hi = blocks * (t + 1) / nt * (LANES * ACCS);
        for (int pass = 0; pass < PASSES; pass++) {
          for (long i = lo; i < hi; i += LANES * ACCS) {
#pragma GCC unroll 24
            for (int k = 0; k < ACCS; k++) acc[k] = ADD(acc[k], LOAD(buf + i + k * LANES));
          }
        }
      }
      vec s = acc[0];
      for (int k = 1; k < ACCS; k++) s = ADD(s, acc[k]);
      STORE(out, s);
      sink += out[0];
    }
    double dt = omp_get_wtime() - t0;
    if (fma) printf("%.3f %.3f\n", 2.0 * LANES * ACCS * (double)work * team / dt / 1e9, dt * 1e3);
    else printf("%.3f %.3f\n", (double)PASSES * n * sizeof(float) / dt / 1e9, dt * 1e3);
  }
  fprintf(stderr, "%g\n", sink);
  return 0;
}
"""

# fma: iterations of 24 (AVX-512) or 12 (AVX2) chains per thread per window (2–7 ms on the CPUs
# measured so far); read: bytes in the buffer, read 24 times per window (a few ms)
_FMA_ITERS = 1_000_000
_READ_BYTES = 16 << 20
_FLAGS = ("-O2", "-march=native", "-fopenmp")


@dataclass(frozen=True)
class Spread:
    """One loop's rate over many short windows: the best, the median and the 10th percentile, and
    the windows' median length."""

    best: float
    median: float
    p10: float
    window_ms: float

    def line(self, unit: str) -> str:
        return (f"in windows of {self.window_ms:.1f} ms median {self.median:.0f} {unit}, 10th percentile {self.p10:.0f} "
                f"({100 * self.p10 / self.median:.0f}% of the median), best {self.best:.0f}")


@dataclass(frozen=True)
class Peak:
    """The FMA loop and the 16 MB read on ``threads`` threads."""

    isa: str
    threads: int
    fma: Spread  # GFLOP/s
    read: Spread  # GB/s

    def line(self) -> str:
        return (f"steadiness ({self.threads} threads, {self.isa}): register FMA loop "
                f"{self.fma.line('GFLOP/s')}; 16 MB read {self.read.line('GB/s')}")


def _binary() -> str | None:
    """The compiled loop, built once per source and CPU into the user cache (never the repository)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    from mobilenets.data import cache_dir
    from mobilenets.deploy import cpu

    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    key = hashlib.sha256("\0".join([_SOURCE, cpu.cpu_features().summary(), version, *_FLAGS]).encode()
                         ).hexdigest()[:16]
    cache = str(cache_dir() / "bench-peak" / key)
    exe = os.path.join(cache, "peak")
    if os.path.exists(exe):
        return exe
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src, out = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
        with open(src, "w") as f:
            f.write(_SOURCE)
        r = subprocess.run([gcc, *_FLAGS, src, "-o", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        os.replace(out, exe)  # atomic: a half-written binary is never run
    return exe


def _spread(exe: str, mode: str, threads: int, work: int, windows: int) -> tuple[str, Spread]:
    r = subprocess.run([exe, mode, str(threads), str(work), str(windows)], capture_output=True, text=True,
                       check=True, timeout=120)
    isa, *lines = r.stdout.splitlines()
    samples = [tuple(map(float, line.split())) for line in lines[1:]]  # the first warms threads and buffer
    rates = sorted(rate for rate, _ in samples)
    return isa, Spread(rates[-1], statistics.median(rates), rates[len(rates) // 10],
                       statistics.median(ms for _, ms in samples))


def measure(threads: int, windows: int = 300) -> Peak | None:
    """The FMA peak (the best window) and both loops' spread on ``threads`` threads; None where
    the loop cannot be built here (no gcc, no OpenMP, no FMA)."""
    try:
        exe = _binary()
        if exe is None:
            return None
        isa, fma = _spread(exe, "fma", threads, _FMA_ITERS, windows)
        _, read = _spread(exe, "read", threads, _READ_BYTES, windows)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return Peak(isa, threads, fma, read)


# A loop whose 10th-percentile window keeps this share of its median rate ran undisturbed (on the
# Zen 4 host 90–97% in quiet stretches, 62–71% in noisy ones), and an FMA loop whose median keeps
# this share of its best window had the cores to itself (94–98% alone, 34–70% beside a CI run).
STEADY = 0.85


def steadiness(peak: Peak | None, when: str) -> str:
    """Whether the machine was steady while it was measured (a shared host's other tenants show as a
    long low tail): a table measured between two steady lines can be quoted, one beside an
    unsteady line is a range, not a figure."""
    if peak is None:
        return f"steadiness {when}: {UNAVAILABLE}"
    tail = [name for name, x in (("FMA", peak.fma), ("read", peak.read)) if x.p10 < STEADY * x.median]
    shared = peak.fma.median < STEADY * peak.fma.best
    why = ([f"{' and '.join(tail)} 10th percentile under {STEADY:.0%} of its median"] if tail else []) + \
          ([f"FMA median under {STEADY:.0%} of its best"] if shared else [])
    verdict = "steady" if not why else (f"UNSTEADY ({'; '.join(why)}: something else shares these cores or "
                                        "their cache; read the figures as a range)")
    return f"{peak.line()} [{when}: {verdict}]"
