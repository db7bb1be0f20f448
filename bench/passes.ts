/**
 * `npm run bench -- passes [--only 52b|1t] [--tokens 512] [--seq 512] [--verify-tokens 8]
 *   [--verify-seq 8] [--forward-tokens 8] [--engines tfjs,torch] [--out bench-out/passes] [--keep]`:
 * the compute passes on both engines at Tele-FLM widths (issue 25). For 52B widths (synthesized,
 * 2 layers) and 1T widths (1 layer): layer-selection distances (select-layers, --tokens in
 * sequences of --seq), verify (the checkpoint against itself: two full-width passes and the
 * comparison) and forward (--ids, top tokens), each as a child process (`node bin/flm-grow.js`)
 * under /usr/bin/time, tfjs then torch in the same run: wall time, the ratio, peak RSS (the
 * largest of node and its Python child) against plan's estimates (stream-memory.ts), and whether
 * the answers agree (distances to 1e-5 relative, same ranking; verdicts; top tokens). The torch
 * distances' time per layer gives the full plan's calibration time (4096 tokens, 64 layers),
 * scaled linearly in tokens and layers. Prints the load (uptime) before and after: the machine
 * may be shared, so compare the ratio more than the absolute numbers.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stageConfig } from '../src/growth/synth.ts';
import { streamedForwardPeakBytes, torchPassPeakBytes } from '../src/model/stream-memory.ts';
import { randomIds } from '../src/model/input-ids.ts';
import type { ModelConfig } from '../src/spec/config.ts';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/flm-grow.js');
const GB = 1e9;
/** RSS of a process with tfjs and its wasm backend loaded (plan-report.ts TFJS_BASE_RSS). */
const TFJS_BASE_RSS = 250e6;

function arg(args: string[], name: string, def: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}

interface Child {
  seconds: number;
  rssBytes: number;
  stdout: string;
  status: number;
}

/** The CLI in a child under /usr/bin/time: %M is the largest RSS of the child and its waited-for children (the Python engine). */
function cli(argv: string[], allowFail = false): Child {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'RSSKB=%M', process.execPath, CLI, ...argv], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0 && !allowFail) throw new Error(`flm-grow ${argv.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  const m = /RSSKB=(\d+)/.exec(r.stderr);
  return { seconds, rssBytes: m === null ? NaN : Number(m[1]) * 1024, stdout: r.stdout, status: r.status ?? 1 };
}

const uptime = () => execFileSync('uptime', { encoding: 'utf8' }).trim();

interface Row {
  stage: string;
  pass: string;
  engine: string;
  seconds: number;
  rss: number;
  estimate: number;
  agree: string;
}

export async function run(args: string[]): Promise<number> {
  const only = arg(args, 'only', '');
  const tokens = Number(arg(args, 'tokens', '512')),
    seq = Number(arg(args, 'seq', '512'));
  const vTokens = Number(arg(args, 'verify-tokens', '8')),
    vSeq = Number(arg(args, 'verify-seq', '8'));
  const fTokens = Number(arg(args, 'forward-tokens', '8'));
  const engines = arg(args, 'engines', 'tfjs,torch').split(',');
  const out = resolve(arg(args, 'out', join(ROOT, 'bench-out', 'passes')));
  mkdirSync(out, { recursive: true });
  console.log(
    `passes bench: distances ${tokens} tokens (seq ${seq}), verify ${vTokens} (seq ${vSeq}), forward ${fTokens} tokens`,
  );
  console.log(`load before: ${uptime()}`);
  const stages = [
    { name: '52b', like: 'tele-flm-52b', layers: 2 },
    { name: '1t', like: 'tele-flm-1t', layers: 1 },
  ].filter((s) => only === '' || s.name === only);
  const rows: Row[] = [];
  for (const st of stages) {
    const cfg: ModelConfig = stageConfig(st.like, { numLayers: st.layers });
    const dir = join(out, `${st.name}-${st.layers}l`);
    if (!existsSync(join(dir, 'config.json'))) {
      const s = cli(['synth', '--like', st.like, '--num-hidden-layers', String(st.layers), '--out', dir, '--quiet']);
      console.log(`synth ${st.like} ${st.layers} layers: ${s.seconds.toFixed(1)} s`);
    }
    const ids = randomIds(1, fTokens, cfg.vocabSize, 5)
      .map((r) => r.join(','))
      .join(';');
    const got: Record<string, Record<string, Child>> = {};
    for (const engine of engines) {
      const e = ['--engine', engine, '--json', '--quiet'];
      got[engine] = {
        distances: cli(['select-layers', dir, ...e, '--calibration-tokens', String(tokens), '--calibration-seq', String(seq)]),
        verify: cli(['verify', dir, dir, ...e, '--calibration-tokens', String(vTokens), '--calibration-seq', String(vSeq)], true),
        forward: cli(['forward', dir, '--ids', ids, ...e]),
      };
      for (const [p, c] of Object.entries(got[engine]))
        console.log(`${st.name} ${p} ${engine}: ${c.seconds.toFixed(1)} s, peak RSS ${(c.rssBytes / GB).toFixed(2)} GB`);
    }
    const est = (engine: string, pass: string): number => {
      if (pass === 'distances')
        return engine === 'torch'
          ? torchPassPeakBytes(cfg, tokens, seq, { skipLogits: true })
          : TFJS_BASE_RSS + streamedForwardPeakBytes(cfg, tokens, seq, { skipLogits: true });
      if (pass === 'forward')
        return engine === 'torch'
          ? torchPassPeakBytes(cfg, fTokens, fTokens)
          : TFJS_BASE_RSS + streamedForwardPeakBytes(cfg, fTokens, fTokens);
      // verify: one pass at a time, plus both passes' logits and hidden states kept for the comparison
      const N = Math.ceil(vTokens / vSeq) * vSeq;
      const kept = 2 * 4 * N * (cfg.vocabSize + (cfg.numLayers + 1) * cfg.hiddenSize);
      return (
        kept +
        (engine === 'torch'
          ? torchPassPeakBytes(cfg, N, vSeq, { hidden: true })
          : TFJS_BASE_RSS + streamedForwardPeakBytes(cfg, N, vSeq))
      );
    };
    // do the engines agree?
    const agree: Record<string, string> = {};
    if (got.tfjs !== undefined && got.torch !== undefined) {
      const d = (e: string) => JSON.parse(got[e].distances.stdout) as { distances: number[]; ranking: number[] };
      const [a, b] = [d('tfjs'), d('torch')];
      const rel = Math.max(...a.distances.map((x, l) => Math.abs(x - b.distances[l]) / Math.abs(x)));
      agree.distances = `max rel diff ${rel.toExponential(1)}, ranking ${JSON.stringify(a.ranking) === JSON.stringify(b.ranking) ? 'same' : 'DIFFERENT'}`;
      const v = (e: string) => JSON.parse(got[e].verify.stdout) as { passed: boolean; relativeLogitDiff: number };
      agree.verify = `verdicts ${v('tfjs').passed}/${v('torch').passed}, rel logit diff ${v('tfjs').relativeLogitDiff.toExponential(1)}/${v('torch').relativeLogitDiff.toExponential(1)}`;
      type Top = { top: { top: { id: number; logit: number }[] }[][] };
      const f = (e: string) => (JSON.parse(got[e].forward.stdout) as Top).top.flat();
      const [fa, fb] = [f('tfjs'), f('torch')];
      let dl = 0;
      fa.forEach((p, i) =>
        p.top.forEach((x, k) => (dl = Math.max(dl, Math.abs(x.logit - fb[i].top[k].logit) / Math.abs(x.logit)))),
      );
      const same = fa.every((p, i) => p.top.map((x) => x.id).join() === fb[i].top.map((x) => x.id).join());
      agree.forward = `top-5 ids ${same ? 'same' : 'DIFFERENT'}, max rel logit diff ${dl.toExponential(1)}`;
    }
    for (const engine of engines)
      for (const [pass, c] of Object.entries(got[engine]))
        rows.push({
          stage: st.name,
          pass,
          engine,
          seconds: c.seconds,
          rss: c.rssBytes,
          estimate: est(engine, pass),
          agree: engine === 'torch' ? (agree[pass] ?? '') : '',
        });
    const t = got.torch?.distances;
    if (t !== undefined && st.name === '52b') {
      const perLayer = t.seconds / st.layers; // start-up and the embedding read included: an upper bound
      const full = perLayer * (4096 / tokens) * 64;
      console.log(
        `52B calibration on torch: ${perLayer.toFixed(1)} s per layer on ${tokens} tokens (start-up included) -> ` +
          `the shipped plan (4096 tokens, 64 layers): at most ~${(full / 60).toFixed(0)} min on this machine ` +
          '(an upper bound: start-up and the per-layer weight reads are scaled with the tokens too; ' +
          'run select-layers at two token counts to separate them, see docs/scaling.md)',
      );
      if (got.tfjs !== undefined) {
        const tf = (got.tfjs.distances.seconds / st.layers) * (4096 / tokens) * 64;
        console.log(`  the same on tfjs (wasm): ~${(tf / 3600).toFixed(1)} h`);
      }
    }
    if (!args.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  }
  console.log(`load after: ${uptime()}`);
  console.log('\n| widths | pass | engine | wall s | vs tfjs | peak RSS GB | estimate GB | agreement |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const base = rows.find((x) => x.stage === r.stage && x.pass === r.pass && x.engine === 'tfjs');
    const ratio = base !== undefined && r.engine !== 'tfjs' ? `${(base.seconds / r.seconds).toFixed(1)}× faster` : '';
    console.log(
      `| ${r.stage} | ${r.pass} | ${r.engine} | ${r.seconds.toFixed(1)} | ${ratio} | ${(r.rss / GB).toFixed(2)} | ${(r.estimate / GB).toFixed(2)} | ${r.agree} |`,
    );
  }
  return 0;
}
