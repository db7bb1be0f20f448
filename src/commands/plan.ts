import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import type { PlanReport } from '../growth/plan-report.ts';
import { shared } from './options.ts';
import { withPlanOptions } from './plan-options.ts';
import { bytesLabel, countLabel, emit, plural } from '../util/format.ts';

export function formatPlanReport(r: PlanReport): string {
  const s = r.source;
  const t = r.targetConfig as Record<string, number>;
  const dims = (o: Record<string, number>) =>
    `L ${o.num_hidden_layers}, H ${o.hidden_size}, F ${o.intermediate_size}, heads ${o.num_attention_heads}/${o.num_key_value_heads} kv, V ${o.vocab_size}`;
  const lines = [
    `source:     ${dims(s)}  (${countLabel(s.parameters)} parameters)`,
    `target:     ${dims(t)}, head_dim ${t.head_dim}`,
    `parameters: ${r.parametersLabel}`,
    `mode:       ${r.mode}${r.zeroModeNote !== undefined ? ` — ${r.zeroModeNote}` : ''}`,
    `width init: ${r.widthInit}`,
    `output:     ${bytesLabel(r.outputBytes)} of ${r.dtype} tensors in ${plural(r.shards, 'shard')}; disk needed ${bytesLabel(r.diskBytes)}`,
    `peak memory of grow (estimate): ${bytesLabel(r.peakMemoryBytes)}${r.peakMemory.note !== undefined ? ` — ${r.peakMemory.note}; writing alone: ${bytesLabel(r.peakMemory.write)}` : ''}${r.peakMemory.calibrationTorch !== undefined ? ` (calibration on --engine torch: ${bytesLabel(r.peakMemory.calibrationTorch)})` : ''}`,
    `layers:     ${r.layerPositionsNote}`,
    ...r.notes.map((n) => `note:       ${n}`),
  ];
  if (r.schedule.length > 0)
    lines.push(
      `mask schedule: ${r.schedule.map((e) => `${e.group} ${e.shape} from step ${e.startStep} over ${e.length}`).join('; ')}`,
    );
  const inserted = (r.layerMap ?? []).map((e, i) => (e.inserted ? `${i}<-${e.source}` : '')).filter((x) => x !== '');
  if (inserted.length > 0) lines.push(`inserted:   ${inserted.join(' ')}  (output layer <- copied source layer)`);
  if (inserted.length > 0 && r.layerMap !== null)
    lines.push(
      `layer map:  ${r.layerMap.map((e) => `${e.source}${e.inserted ? '*' : ''}`).join(' ')}  (source layer of each output layer, * inserted)`,
    );
  lines.push(
    '',
    r.layerMap === null
      ? 'per-tensor operations (layer 0 shown; other layers alike, copied from the source layers chosen at grow time):'
      : 'per-tensor operations (layer 0 and the first inserted layer shown; other layers alike):',
  );
  const firstInserted = r.layerMap === null ? -1 : r.layerMap.findIndex((e) => e.inserted);
  const show = r.tensors.filter((x) => {
    const m = /^model\.layers\.(\d+)\./.exec(x.name);
    return m === null || Number(m[1]) === 0 || Number(m[1]) === firstInserted;
  });
  for (const x of show) {
    const axes = x.rows === '' ? `[${x.cols}]` : `rows [${x.rows}] cols [${x.cols}]`;
    lines.push(`  ${x.name} [${x.shape.join(', ')}] <- ${x.source ?? '(new)'}: ${axes}; new: ${x.fill}`);
  }
  return lines.join('\n');
}

export const planCommand: CommandModule = {
  ...COMMAND_LINES.plan,
  builder: (y) =>
    shared(
      withPlanOptions(y).positional('source', {
        type: 'string',
        describe: 'checkpoint folder or config.json',
        demandOption: true,
      }),
      ['json', 'dtype', 'out-shard-size'],
      { dtype: { describe: "output dtype (default: the source's)" }, 'out-shard-size': { default: '5GB' } },
    )
      .example(
        '$0 plan fixtures/hf/llama-tiny-f32 --plan growth-plans/tiny-stage1-to-stage2.json',
        'what the plan does to this checkpoint',
      )
      .example('$0 plan config.json --hidden-size 8192 --num-hidden-layers 64 --json', 'sizes from a config alone, as JSON'),
  handler: async (a) => {
    const [
      { existsSync, statSync },
      { join },
      { readConfigFile },
      { parseDtypeName },
      { parseSize },
      { planFromArgs },
      { planReport },
      { Checkpoint },
      { sourceDtype },
    ] = await Promise.all([
      import('node:fs'),
      import('node:path'),
      import('../spec/config.ts'),
      import('../util/dtype.ts'),
      import('../checkpoint/checkpoint-writer.ts'),
      import('../growth/plan-flags.ts'),
      import('../growth/plan-report.ts'),
      import('../checkpoint/checkpoint.ts'),
      import('../growth/grow.ts'),
    ]);
    const src = a.source as string;
    const isDir = existsSync(src) && statSync(src).isDirectory();
    if (!existsSync(src)) {
      const [{ notAFolderMessage }, { FlmGrowError }] = await Promise.all([
        import('../checkpoint/locate.ts'),
        import('../util/errors.ts'),
      ]);
      throw new FlmGrowError('NotACheckpoint', `${notAFolderMessage(src)}; or give a config.json`);
    }
    const cfg = readConfigFile(isDir ? join(src, 'config.json') : src);
    if (isDir) {
      // the stored dtype decides output bytes when --dtype is absent; headers only are read
      const ck = await Checkpoint.open(src);
      cfg.dtype = sourceDtype(ck);
      await ck.close();
    }
    const plan = planFromArgs(a);
    const r = planReport(cfg, plan, {
      dtype: a.dtype === undefined ? undefined : parseDtypeName(a.dtype as string),
      maxShardSize: parseSize(a['out-shard-size'] as string, '--out-shard-size'),
    });
    emit(a.json, r, () => formatPlanReport(r));
  },
};
