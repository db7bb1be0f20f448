import type { CommandModule } from 'yargs';
import { BACKEND_NAMES, type BackendName } from '../backend.ts';
import { DEFAULT_TOLERANCE, formatReport, verifyGrowth, VerifyFailedError, type VerifyReport } from '../verify.ts';
import { progressBar, type Progress } from './progress.ts';

export const verifyCommand: CommandModule = {
  command: 'verify <source> <grown>',
  describe: 'Check function preservation: run both checkpoints (layer-streamed, masks applied) on the same tokens and compare logits and hidden states; exit 1 above tolerance',
  builder: (y) => y
    .positional('source', { type: 'string', demandOption: true })
    .positional('grown', { type: 'string', demandOption: true })
    .option('tokens', { type: 'number', default: 128, describe: 'random tokens (rounded up to whole sequences)' })
    .option('seq', { type: 'number', default: 32, describe: 'sequence length of the random inputs' })
    .option('seed', { type: 'number', default: 0 })
    .option('input', { type: 'string', describe: 'safetensors file with input_ids [B, T] instead of random tokens' })
    .option('tolerance', { type: 'number', describe: `max |Δlogit| relative to the source's max |logit| (default ${DEFAULT_TOLERANCE}; for a zero-mode growth with rounded norm gains, (2L+1) × the dtype's unit roundoff, from the manifest)` })
    .option('json', { type: 'boolean', default: false })
    .option('backend', { type: 'string', choices: BACKEND_NAMES, default: 'auto' })
    .option('quiet', { type: 'boolean', default: false }),
  handler: async (a) => {
    let bar: Progress | undefined;
    const print = (r: VerifyReport) => process.stdout.write((a.json === true ? JSON.stringify(r, null, 2) : formatReport(r)) + '\n');
    try {
      const r = await verifyGrowth(a.source as string, a.grown as string, {
        tokens: a.tokens as number, seq: a.seq as number, seed: a.seed as number, input: a.input as string | undefined,
        tolerance: a.tolerance as number | undefined, backend: a.backend as BackendName,
        onProgress: (done, total) => { bar ??= progressBar('verify (layers)', total, { quiet: a.quiet === true || a.json === true }); bar.update(done); },
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
