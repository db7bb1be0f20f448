import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const growCommand: CommandModule = {
  command: 'grow <source> <destination>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'grow is not implemented yet');
  },
};
