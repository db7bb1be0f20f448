/**
 * A child process with a deadline, for tests that start torchrun: a run that hangs (a gloo
 * connection that never comes up, a rendezvous that never completes) fails its test with a message
 * naming the command and the deadline, instead of hanging the test run. On the deadline the whole
 * process tree is killed by pid: torchrun starts its workers in sessions of their own, so killing
 * the child's process group would leave them running.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface Bounded {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Every descendant of `root` (children before their parents are gone: collected first, then killed). */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const p = todo.pop() as number;
    for (const c of children.get(p) ?? []) {
      out.push(c);
      todo.push(c);
    }
  }
  return out;
}

function killTree(pid: number): void {
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Run `cmd args` to completion, or reject after `timeoutMs` with the command and its stderr's tail. */
export function spawnBounded(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; label?: string },
): Promise<Bounded> {
  const t0 = Date.now();
  return new Promise((res, rej) => {
    const c = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      if (c.pid !== undefined) killTree(c.pid);
      rej(
        new Error(
          `${opts.label ?? args.slice(0, 3).join(' ')}: did not finish within ${opts.timeoutMs / 1000} s (hung; its process tree was killed). ` +
            `stderr tail:\n${stderr.split('\n').slice(-15).join('\n')}`,
        ),
      );
    }, opts.timeoutMs);
    c.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    c.on('close', (status, signal) => {
      clearTimeout(timer);
      res({ status, signal, stdout, stderr, seconds: (Date.now() - t0) / 1000 });
    });
  });
}
