import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const verifyCommand: CommandModule = {
  command: 'verify <source> <grown>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'verify is not implemented yet');
  },
};
