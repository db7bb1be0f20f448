import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const trainCommand: CommandModule = {
  command: 'train <checkpoint>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'train is not implemented yet');
  },
};
