import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const inspectCommand: CommandModule = {
  command: 'inspect <checkpoint>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'inspect is not implemented yet');
  },
};
