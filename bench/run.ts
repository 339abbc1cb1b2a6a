// `npm run bench`: runs every benchmark in turn and prints its report. A benchmark reports;
// it does not fail the build, so a missed target still exits 0 (only a benchmark that cannot
// run at all sets a non-zero exit code). Add new benchmarks to the list below.
import { formatLatencyReport, latencyOptionsFromEnv, runLatencyBenchmark } from './latency.js';
import { runVgpuBenchmarks } from './vgpu.js';
import { runVncBenchmarks } from './vnc.js';

interface Benchmark {
  name: string;
  /** Runs the benchmark and returns its printable report. */
  run(): Promise<string>;
}

const benchmarks: Benchmark[] = [
  {
    name: 'latency (REGION_READ round trip vs C floor)',
    run: async () => formatLatencyReport(await runLatencyBenchmark(latencyOptionsFromEnv(process.argv.slice(2)))),
  },
  { name: 'vGPU (boot to a drawn framebuffer, plane query, frame snapshot)', run: () => runVgpuBenchmarks() },
  { name: "VNC vs QEMU's built-in VNC (update rate, bytes, latency, CPU)", run: () => runVncBenchmarks() },
];

for (const b of benchmarks) {
  process.stdout.write(`=== ${b.name}\n`);
  try {
    process.stdout.write(`${await b.run()}\n\n`);
  } catch (e) {
    process.exitCode = 1;
    process.stdout.write(`benchmark failed to run: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n\n`);
  }
}
