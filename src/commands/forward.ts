import type { CommandModule } from 'yargs';
import { existsSync } from 'node:fs';
import { Checkpoint } from '../checkpoint/checkpoint.ts';
import { writeSafetensors } from '../checkpoint/safetensors-writer.ts';
import { writeFileAtomic } from '../checkpoint/atomic.ts';
import { FlmGrowError, ModelInputError } from '../errors.ts';
import { BACKEND_NAMES, initBackend, type BackendName } from '../backend.ts';
import { loadMasksIfAny } from '../masks.ts';
import { streamedForward } from '../model/streaming.ts';
import { parseIdList, readInputIds } from '../model/input-ids.ts';
import { progressBars } from './progress.ts';
import { isInside } from '../checkpoint/paths.ts';
import { runTorchModule } from '../torch-engine.ts';

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Top-k (id, logit) of one row, highest first. */
export function topK(row: Float32Array, k: number): [number, number][] {
  const best: [number, number][] = [];
  for (let v = 0; v < row.length; v++) {
    if (best.length < k || row[v] > best[best.length - 1][1]) {
      best.push([v, row[v]]);
      best.sort((a, b) => b[1] - a[1]);
      if (best.length > k) best.pop();
    }
  }
  return best;
}

export const forwardCommand: CommandModule = {
  command: 'forward <checkpoint>',
  describe: 'Run the model (layer-streamed, f32, masks applied when present): logits and hidden states as transformers computes them',
  builder: (y) => y
    .positional('checkpoint', { type: 'string', demandOption: true })
    .option('input', { type: 'string', describe: 'safetensors file with input_ids (I64 or I32, [batch, seq])' })
    .option('output', { type: 'string', describe: 'safetensors file to write: logits F32 [B,T,V], hidden_states.N F32 [B,T,H] for N = 0..L' })
    .option('ids', { type: 'string', describe: 'quick run on token ids "1,2,3" (";" separates sequences): prints the top tokens' })
    .option('top', { type: 'number', default: 5, describe: 'top tokens to print per position with --ids' })
    .option('masks', { type: 'boolean', default: true, describe: 'apply masks.safetensors when present (--no-masks: the plain model)' })
    .option('overwrite', { type: 'boolean', default: false })
    .option('backend', { type: 'string', choices: BACKEND_NAMES, default: 'auto' })
    .option('quiet', { type: 'boolean', default: false })
    .option('engine', { type: 'string', choices: ['tfjs', 'torch'], default: 'tfjs', describe: 'torch: python/flm_grow_torch.forward (needs --input/--output)' })
    .check((a) => {
      if ((a.input === undefined) === (a.ids === undefined)) throw new FlmGrowError('UsageError', 'forward: give exactly one of --input or --ids');
      if (a.input !== undefined && a.output === undefined) throw new FlmGrowError('UsageError', 'forward: --input needs --output');
      return true;
    }),
  handler: async (a) => {
    const out = a.output as string | undefined;
    if (out !== undefined) {
      // --overwrite must never replace what this command reads
      if (a.input !== undefined && isInside(out, a.input as string)) throw new FlmGrowError('OutputIsInput', `--output ${out} is the --input file; write the result elsewhere`);
      if (isInside(out, a.checkpoint as string)) throw new FlmGrowError('OutputIsInput', `--output ${out} is inside the checkpoint ${a.checkpoint as string}; write the result elsewhere`);
    }
    if (out !== undefined && existsSync(out) && a.overwrite !== true) throw new FlmGrowError('OutputExists', `${out} exists (use --overwrite)`);
    if (a.engine === 'torch') {
      if (out === undefined) throw new FlmGrowError('UsageError', 'forward --engine torch: give --input and --output');
      const r = await runTorchModule('flm_grow_torch.forward', [a.checkpoint as string, '--input', a.input as string, '--output', out, ...(a.masks === false ? ['--no-masks'] : [])]);
      if (r.code !== 0) throw new FlmGrowError('TorchEngineFailed', `forward --engine torch exited with code ${r.code}`);
      return;
    }
    const ids = a.ids !== undefined ? parseIdList(a.ids as string) : await readInputIds(a.input as string);
    const backend = await initBackend(a.backend as BackendName);
    const ck = await Checkpoint.open(a.checkpoint as string);
    try {
      const cfg = ck.config;
      const masks = a.masks === false ? null : ((await loadMasksIfAny(ck.dir, cfg)) ?? null);
      const r = await streamedForward(ck, ids, { masks, collectHidden: out !== undefined, progress: progressBars(a.quiet === true) });
      const { batch: B, seqLen: T } = r;
      const V = cfg.vocabSize, H = cfg.hiddenSize;
      if (out !== undefined) {
        const tensors = [{ name: 'logits', dtype: 'F32' as const, shape: [B, T, V], data: f32Bytes(r.logits) }];
        (r.hidden ?? []).forEach((h, n) => tensors.push({ name: `hidden_states.${n}`, dtype: 'F32', shape: [B, T, H], data: f32Bytes(h) }));
        await writeFileAtomic(out, (tmp) => writeSafetensors(tmp, tensors, { format: 'pt', producer: 'flm-grow forward', masked: String(r.masked) }));
        process.stderr.write(`forward: ${B}×${T} tokens, ${cfg.numLayers} layers${r.masked ? ', masked model' : ''}, backend ${backend} -> ${out}\n`);
        return;
      }
      const k = a.top as number;
      if (!(Number.isInteger(k) && k > 0)) throw new ModelInputError(`--top must be a positive integer, got ${k}`);
      const lines: string[] = [`${r.masked ? 'masked model, ' : ''}backend ${backend}; top ${k} next tokens (id:logit) per position:`];
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const row = r.logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
          lines.push(`${B > 1 ? `[${b}] ` : ''}${String(t).padStart(4)} id ${String(ids[b][t]).padStart(6)} -> ${topK(row, k).map(([v, l]) => `${v}:${l.toFixed(4)}`).join('  ')}`);
        }
      }
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      await ck.close();
    }
  },
};
