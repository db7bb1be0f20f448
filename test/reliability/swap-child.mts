// Child for the --overwrite swap test: replaces `dest` and is SIGKILLed between the swap's two
// renames (through AtomicDir's onSwap fault-injection option), the worst moment to die.
import { writeFileSync } from 'node:fs';
import { writeAtomically } from '../../src/checkpoint/atomic.ts';

const dest = process.argv[2];
await writeAtomically(
  dest,
  {
    overwrite: true,
    onSwap: () => {
      process.kill(process.pid, 'SIGKILL');
    },
  },
  async (d) => {
    writeFileSync(d.path('which'), 'new');
  },
);
process.stdout.write('committed\n');
