import type { CommandModule } from 'yargs';
import { COMMAND_LINES } from './index.ts';
import { shared } from './options.ts';

export const inspectCommand: CommandModule = {
  ...COMMAND_LINES.inspect,
  builder: (y) =>
    shared(
      y.positional('checkpoint', { type: 'string', demandOption: true, describe: 'checkpoint folder, or a config.json alone' }),
      ['json'],
    )
      .example('$0 inspect fixtures/hf/llama-tiny-f32', 'the summary as text')
      .example('$0 inspect fixtures/hf/llama-tiny-f32 --json', 'one JSON object (config, tensors, shards, masks, manifest)')
      .example('$0 inspect fixtures/configs/Llama-3.2-1B.json', 'what a config alone implies: parameters, bytes, tensors'),
  handler: async (a) => {
    const [{ inspectCheckpoint, formatReport }, { CheckpointError }] = await Promise.all([
      import('./inspect-report.ts'),
      import('../util/errors.ts'),
    ]);
    const r = await inspectCheckpoint(a.checkpoint as string);
    process.stdout.write(a.json === true ? JSON.stringify(r, null, 2) + '\n' : formatReport(r));
    const problems = r.mismatches.map((m) => m.message);
    if (r.masks !== null && 'error' in r.masks) problems.push(r.masks.error);
    if (problems.length > 0) {
      throw new CheckpointError(
        'ConfigMismatch',
        `${r.checkpoint}: ${problems.length} problem${problems.length > 1 ? 's' : ''}:\n  ${problems.slice(0, 10).join('\n  ')}${problems.length > 10 ? '\n  ...' : ''}`,
      );
    }
  },
};
