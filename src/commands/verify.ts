import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import type { BackendName } from '../engines/tfjs-backend.ts';
import type { VerifyReport } from '../growth/verify.ts';
import { shared, spec } from './options.ts';
import { progressBar, progressBars, type Progress } from './progress.ts';
import type { PassEngine } from '../model/torch-passes.ts';

/** verify.ts's DEFAULT_TOLERANCE (checked by test/cli/options.test.ts; not imported: verify.ts loads tfjs). */
export const DEFAULT_TOLERANCE = 1e-5;

export const verifyCommand: CommandModule = {
  ...COMMAND_LINES.verify,
  builder: (y) =>
    shared(
      y
        .positional('source', { type: 'string', demandOption: true, describe: 'the checkpoint before growth' })
        .positional('grown', { type: 'string', demandOption: true, describe: 'the grown checkpoint' })
        .option(
          'tolerance',
          spec('tolerance', 'number', {
            describe: `max |Δlogit| relative to the source's max |logit| (default ${DEFAULT_TOLERANCE}; for a zero-mode growth with rounded norm gains, (2L+1) × the dtype's unit roundoff, from the manifest)`,
          }),
        ),
      ['json', 'quiet', 'backend', 'engine', 'input', 'seed', 'calibration-tokens', 'calibration-seq', 'calibration-seed'],
      {
        engine: {
          default: 'tfjs',
          describe:
            'tfjs, torch (python/flm_grow_torch/passes.py: every core or the GPU, layer-streamed) or auto (torch when found)',
        },
        'calibration-tokens': { default: 128 },
        'calibration-seq': { default: 32 },
        backend: { default: 'auto' },
        seed: { describe: 'same as --calibration-seed (the only random numbers drawn here)' },
        input: { describe: 'safetensors file with input_ids [B, T] instead of random tokens' },
      },
    )
      .example('$0 verify fixtures/hf/llama-tiny-f32 /tmp/stage2', 'max |Δlogits| on the same tokens; exit 1 above tolerance')
      .example('$0 verify src grown --input ids.safetensors --json', 'on your own token ids, as JSON'),
  handler: async (a) => {
    const [{ formatReport, verifyGrowth, VerifyFailedError }, { resolvePassEngine }] = await Promise.all([
      import('../growth/verify.ts'),
      import('../model/torch-passes.ts'),
    ]);
    const engine = resolvePassEngine(a.engine as PassEngine);
    const quiet = a.quiet === true || a.json === true;
    let bar: Progress | undefined;
    const print = (r: VerifyReport) =>
      process.stdout.write((a.json === true ? JSON.stringify(r, null, 2) : formatReport(r)) + '\n');
    try {
      const r = await verifyGrowth(a.source as string, a.grown as string, {
        tokens: a['calibration-tokens'] as number,
        seq: a['calibration-seq'] as number,
        seed: ((a['calibration-seed'] ?? a.seed) as number | undefined) ?? 0,
        input: a.input as string | undefined,
        tolerance: a.tolerance as number | undefined,
        backend: a.backend as BackendName,
        engine,
        // torch: a bar per pass over the weight bytes it streams (the layer bar would sit still)
        torch: { progress: progressBars(quiet) },
        onProgress: (done, total) => {
          if (engine === 'torch') return;
          bar ??= progressBar('verify (layers)', total, { quiet });
          bar.update(done);
        },
      });
      bar?.stop();
      print(r);
    } catch (e) {
      bar?.stop();
      if (e instanceof VerifyFailedError) print(e.report);
      throw e;
    }
  },
};
