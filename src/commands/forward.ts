import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { FlmGrowError, ModelInputError } from '../util/errors.ts';
import { shared, spec } from './options.ts';
import { emit, plural } from '../util/format.ts';
import { logLine, progressBars } from './progress.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import type { PassEngine } from '../model/torch-passes.ts';

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
  ...COMMAND_LINES.forward,
  builder: (y) =>
    shared(
      y
        .positional('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint folder' })
        .option('ids', {
          type: 'string',
          describe: 'quick run on token ids "1,2,3" (";" separates sequences): prints the top tokens',
        })
        .option('top', spec('top', 'number', { default: 5, describe: 'top tokens to print per position with --ids' }))
        .option('masks', {
          type: 'boolean',
          default: true,
          describe: 'apply masks.safetensors when present (--no-masks: the plain model)',
        }),
      ['json', 'quiet', 'backend', 'engine', 'input', 'out', 'overwrite'],
      {
        out: {
          describe:
            'safetensors file to write: logits F32 [B,T,V] and hidden_states.N F32 [B,T,H] for every N from 0 to L (the layers)',
        },
        backend: { default: 'auto' },
        engine: {
          default: 'tfjs',
          describe:
            'tfjs, torch (python/flm_grow_torch/passes.py: layer-streamed, every core or the GPU) or auto (torch when a Python with torch is found)',
        },
      },
    )
      .example('$0 forward fixtures/hf/llama-tiny-f32 --ids 1,2,3', 'top next tokens per position')
      .example(
        '$0 forward fixtures/hf/llama-tiny-f32 --input ids.safetensors --out out.safetensors',
        'logits and hidden states, as transformers computes them',
      )
      .check((a) => {
        if ((a.input === undefined) === (a.ids === undefined))
          throw new FlmGrowError('UsageError', 'forward: give exactly one of --input or --ids');
        if (a.input !== undefined && a.out === undefined) throw new FlmGrowError('UsageError', 'forward: --input needs --out');
        return true;
      }),
  handler: async (a) => {
    const out = (a.out ?? a.output) as string | undefined;
    const [{ existsSync }, { isInside }] = await Promise.all([import('node:fs'), import('../checkpoint/paths.ts')]);
    if (out !== undefined) {
      // --overwrite must never replace what this command reads
      if (a.input !== undefined && isInside(out, a.input as string))
        throw new FlmGrowError('OutputIsInput', `--out ${out} is the --input file; write the result elsewhere`);
      if (isInside(out, a.checkpoint as string))
        throw new FlmGrowError(
          'OutputIsInput',
          `--out ${out} is inside the checkpoint ${a.checkpoint as string}; write the result elsewhere`,
        );
    }
    if (out !== undefined && existsSync(out) && a.overwrite !== true)
      throw new FlmGrowError('OutputExists', `${out} exists (use --overwrite)`);
    const [
      { CheckpointFolder },
      { writeSafetensors },
      { writeFileAtomic },
      { initBackend },
      { streamedForward },
      { parseIdList, readInputIds },
      { resolvePassEngine, torchForward },
    ] = await Promise.all([
      import('../checkpoint/checkpoint-folder.ts'),
      import('../checkpoint/safetensors-writer.ts'),
      import('../checkpoint/atomic.ts'),
      import('../engines/tfjs-backend.ts'),
      import('../model/streaming.ts'),
      import('../model/input-ids.ts'),
      import('../model/torch-passes.ts'),
    ]);
    const engine = resolvePassEngine(a.engine as PassEngine);
    const ids = a.ids !== undefined ? parseIdList(a.ids as string) : await readInputIds(a.input as string);
    const backend = engine === 'torch' ? 'torch' : await initBackend(a.backend as BackendName);
    const ck = await CheckpointFolder.open(a.checkpoint as string);
    try {
      const cfg = ck.config;
      const masks = a.masks === false ? null : ((await ck.masks()) ?? null);
      const opts = { collectHidden: out !== undefined, progress: progressBars(a.quiet === true) };
      // the same results either way: the torch pass reads masks.safetensors itself (--no-masks: not)
      const r =
        engine === 'torch'
          ? await torchForward(a.checkpoint as string, ids, { ...opts, masks: masks !== null })
          : await streamedForward(ck, ids, { ...opts, masks });
      const { batch: B, seqLen: T } = r;
      const V = cfg.vocabSize,
        H = cfg.hiddenSize;
      if (out !== undefined) {
        const tensors = [{ name: 'logits', dtype: 'F32' as const, shape: [B, T, V], data: f32Bytes(r.logits) }];
        (r.hidden ?? []).forEach((h, n) =>
          tensors.push({ name: `hidden_states.${n}`, dtype: 'F32', shape: [B, T, H], data: f32Bytes(h) }),
        );
        await writeFileAtomic(out, (tmp) =>
          writeSafetensors(tmp, tensors, { format: 'pt', producer: 'flm-grow forward', masked: String(r.masked) }),
        );
        const line = `forward: ${B}×${T} tokens, ${plural(cfg.numLayers, 'layer')}${r.masked ? ', masked model' : ''}, backend ${backend} -> ${out}`;
        if (a.json === true) emit(true, { out, batch: B, seqLen: T, layers: cfg.numLayers, masked: r.masked, backend }, '');
        else logLine(line);
        return;
      }
      const k = a.top as number;
      if (!(Number.isInteger(k) && k > 0)) throw new ModelInputError(`--top must be a positive integer, got ${k}`);
      if (a.json === true) {
        const top = ids.map((seq, b) =>
          seq.map((id, t) => ({
            id,
            top: topK(r.logits.subarray((b * T + t) * V, (b * T + t + 1) * V), k).map(([v, l]) => ({ id: v, logit: l })),
          })),
        );
        emit(true, { masked: r.masked, backend, top }, '');
        return;
      }
      const lines: string[] = [
        `${r.masked ? 'masked model, ' : ''}backend ${backend}; top ${k} next tokens (id:logit) per position:`,
      ];
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const row = r.logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
          lines.push(
            `${B > 1 ? `[${b}] ` : ''}${String(t).padStart(4)} id ${String(ids[b][t]).padStart(6)} -> ${topK(row, k)
              .map(([v, l]) => `${v}:${l.toFixed(4)}`)
              .join('  ')}`,
          );
        }
      }
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      await ck.close();
    }
  },
};
