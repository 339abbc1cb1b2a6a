// The vGPU benchmarks, run in turn and reported as one text:
//   1. boot to a drawn framebuffer, ours (vfio-user) vs QEMU's built-in bochs-display (vgpu-boot.ts)
//   2. plane query latency over the management socket, vs 'ping' (vgpu-plane-query.ts)
//   3. 1920x1080 frame snapshot throughput, vs a plain memory copy (vgpu-snapshot.ts)
// Every figure is a ratio against a baseline measured in the same run (these are noisy 2-vCPU
// VMs). Benchmark 1 needs the QEMU test environment (scripts/test-env.sh) and takes most of the
// time: 9 boots (~100 s at load 10+; less on an idle VM) and no new round past its 140 s budget.
// The whole set took 108–121 s at load 10–13. Prints nothing unless run directly:
//   node dist/bench/vgpu.js [boot] [plane-query] [snapshot]     (default: all three)
import { pathToFileURL } from 'node:url';
import { type BootBenchOptions, formatBootReport, runBootBenchmark } from './vgpu-boot.js';
import { formatPlaneQueryReport, type PlaneQueryOptions, runPlaneQueryBenchmark } from './vgpu-plane-query.js';
import { formatSnapshotReport, runSnapshotBenchmark, type SnapshotOptions } from './vgpu-snapshot.js';

export { formatBootReport, runBootBenchmark } from './vgpu-boot.js';
export { formatPlaneQueryReport, runPlaneQueryBenchmark } from './vgpu-plane-query.js';
export { formatSnapshotReport, runSnapshotBenchmark } from './vgpu-snapshot.js';

export type VgpuBenchName = 'boot' | 'plane-query' | 'snapshot';
export const VGPU_BENCHES: readonly VgpuBenchName[] = ['boot', 'plane-query', 'snapshot'];

export interface VgpuBenchOptions {
  only?: readonly VgpuBenchName[];
  boot?: Partial<BootBenchOptions>;
  planeQuery?: Partial<PlaneQueryOptions>;
  snapshot?: Partial<SnapshotOptions>;
  /** Progress messages; default none. */
  progress?: (message: string) => void;
}

/**
 * Runs the vGPU benchmarks and returns the report. A benchmark that cannot run does not stop the
 * others; if any failed, the error thrown carries the whole report, failures included.
 */
export async function runVgpuBenchmarks(options: VgpuBenchOptions = {}): Promise<string> {
  const progress = options.progress ?? (() => {});
  const only = options.only ?? VGPU_BENCHES;
  const jobs: { name: VgpuBenchName; title: string; run: () => Promise<string> }[] = [
    {
      name: 'boot',
      title: 'vGPU boot to a drawn framebuffer (ours vs QEMU bochs-display)',
      run: async () => formatBootReport(await runBootBenchmark({ progress, ...options.boot })),
    },
    {
      name: 'plane-query',
      title: 'vGPU plane query latency (plane-query vs ping)',
      run: async () => formatPlaneQueryReport(await runPlaneQueryBenchmark({ progress, ...options.planeQuery })),
    },
    {
      name: 'snapshot',
      title: 'vGPU 1920x1080 snapshot throughput (snapshot vs plain copy)',
      run: async () => formatSnapshotReport(await runSnapshotBenchmark({ progress, ...options.snapshot })),
    },
  ];
  const parts: string[] = [];
  let failed = 0;
  for (const j of jobs.filter((x) => only.includes(x.name))) {
    progress(`--- ${j.title}`);
    const t = performance.now();
    try {
      parts.push(`--- ${j.title}\n${await j.run()}`);
    } catch (e) {
      failed++;
      parts.push(
        `--- ${j.title}\nFAILED to run after ${((performance.now() - t) / 1000).toFixed(1)} s: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
      );
    }
  }
  const report = parts.join('\n\n');
  if (failed) throw new Error(`${failed} vGPU benchmark(s) could not run\n\n${report}`);
  return report;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const bad = args.filter((a) => !VGPU_BENCHES.includes(a as VgpuBenchName));
  if (bad.length) {
    process.stderr.write(`usage: node dist/bench/vgpu.js [${VGPU_BENCHES.join('] [')}]\n`);
    process.exit(2);
  }
  const t = performance.now();
  try {
    const report = await runVgpuBenchmarks({
      only: args.length ? (args as VgpuBenchName[]) : VGPU_BENCHES,
      progress: (m) => process.stderr.write(`[${((performance.now() - t) / 1000).toFixed(1)} s] ${m}\n`),
    });
    process.stdout.write(`${report}\n`);
  } catch (e) {
    process.exitCode = 1;
    process.stdout.write(`${e instanceof Error ? e.message : String(e)}\n`);
  }
}
