// ONNX Runtime peer of bench_infer (and the by-hand ORT check of deploy/README.md), run with Node.js:
//   NODE_PATH=/tmp/ort/node_modules node bench/ort_bench.js MODEL.onnx INPUT.f32 N THREADS SECONDS OUT.f32 [wall|cpu]
// onnxruntime-node is not a Debian package: install it outside the repository (npm install
// onnxruntime-node --ignore-scripts in a scratch folder; its CPU build ships in the package).
// INPUT.f32: N images, float32 NCHW [N, 3, S, S] in [0, 1]. Writes the logits of the first run to
// OUT.f32 (float32 [N, K]), then times runs for SECONDS after a warm-up and prints one JSON line:
// {"median_ms": ..., "runs": ..., "ort": "<version>"}. "cpu": each run's process CPU time / THREADS
// instead of its wall time (as bench_infer --clock cpu).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, inputPath, nArg, threadsArg, secondsArg, outPath, clock = 'wall'] = process.argv.slice(2);
  if (!outPath) throw new Error('usage: ort_bench.js MODEL.onnx INPUT.f32 N THREADS SECONDS OUT.f32');
  const n = parseInt(nArg, 10), threads = parseInt(threadsArg, 10), seconds = parseFloat(secondsArg);
  const bytes = fs.readFileSync(inputPath);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const side = Math.round(Math.sqrt(data.length / (n * 3)));
  if (n * 3 * side * side !== data.length) throw new Error(`${inputPath}: ${data.length} floats are not ${n} square RGB images`);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, [n, 3, side, side]) };
  const first = await session.run(feeds);
  const logits = first[session.outputNames[0]].data;
  fs.writeFileSync(outPath, Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength));
  const warmupEnd = performance.now() + 100;
  while (performance.now() < warmupEnd) await session.run(feeds);
  const now = clock === 'cpu' ? () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 / threads; }
                               : () => performance.now();
  const ms = [];
  const end = performance.now() + seconds * 1000;
  while (ms.length < 5 || performance.now() < end) {
    const t0 = now();
    await session.run(feeds);
    ms.push(now() - t0);
  }
  ms.sort((a, b) => a - b);
  const median = ms.length % 2 ? ms[(ms.length - 1) / 2] : (ms[ms.length / 2 - 1] + ms[ms.length / 2]) / 2;
  console.log(JSON.stringify({ median_ms: median, runs: ms.length, ort: ort.env.versions.common }));
}

main().catch((e) => {
  console.error(`ort_bench: ${e.message}`);
  process.exit(1);
});
