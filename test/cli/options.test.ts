/**
 * One vocabulary across commands: every command takes the shared options docs/cli.md says it
 * does, old spellings still work, `--help` names an example, bad values are echoed as typed,
 * misspellings get a "did you mean", and the light copies of library lists stay in step.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yargs, { type CommandModule } from 'yargs';
import { COMMAND_NAMES, loadCommands } from '../../src/commands/index.ts';
import {
  assembleArgs,
  BACKEND_CHOICES,
  COMMAND_OPTIONS,
  destinationArg,
  ENGINE_CHOICES,
  SHARED_OPTIONS,
  suggest,
} from '../../src/commands/options.ts';
import { FAMILY_CHOICES, STAGE_CHOICES } from '../../src/commands/synth.ts';
import { DEFAULT_TOLERANCE } from '../../src/commands/verify.ts';
import { countLabel, plural } from '../../src/util/format.ts';
import { configToJson, parseConfig } from '../../src/spec/config.ts';
import { float32Shortest } from '../../src/checkpoint/masks.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const commands = await loadCommands();
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [join(ROOT, 'bin/flm-grow.js'), ...args], { encoding: 'utf8', cwd: ROOT });

function optionKeys(c: CommandModule<any, any>): string[] {
  const y = (c.builder as (y: unknown) => unknown)(yargs([])) as { getOptions(): { key: Record<string, unknown> } };
  return Object.keys(y.getOptions().key);
}

/** Parse `argv` against one command, returning the arguments its handler would get. */
async function parsed(c: CommandModule<any, any>, argv: string[]): Promise<Record<string, unknown>> {
  let got: Record<string, unknown> = {};
  await yargs(argv)
    .command({
      ...c,
      handler: (a: Record<string, unknown>) => {
        got = a;
      },
    })
    .strict()
    .fail((m, e) => {
      throw e ?? new Error(m);
    })
    .parseAsync();
  return got;
}

const byName = (n: string) => commands.find((c) => String(c.command).startsWith(`${n} `)) as CommandModule<any, any>;

describe('the shared option table', () => {
  it('covers every command, and every command accepts its shared options', () => {
    expect(Object.keys(COMMAND_OPTIONS).sort()).toEqual([...COMMAND_NAMES].sort());
    for (const name of COMMAND_NAMES) {
      const keys = optionKeys(byName(name));
      expect(
        COMMAND_OPTIONS[name].filter((o) => !keys.includes(o)),
        name,
      ).toEqual([]);
      expect(keys, `${name} --json`).toContain('json');
    }
  });

  it('is the table docs/cli.md prints', () => {
    const doc = readFileSync(join(ROOT, 'docs/cli.md'), 'utf8');
    for (const n of Object.keys(SHARED_OPTIONS)) expect(doc, n).toContain(`| \`--${n}\` |`);
  });

  it('keeps old spellings as hidden aliases', async () => {
    const v = await parsed(byName('verify'), ['verify', 'a', 'b', '--tokens', '7', '--seq', '3']);
    expect([v['calibration-tokens'], v['calibration-seq']]).toEqual([7, 3]);
    const f = await parsed(byName('forward'), ['forward', 'ck', '--input', 'i.safetensors', '--output', 'o.safetensors']);
    expect(f.out).toBe('o.safetensors');
    const s = await parsed(byName('select-layers'), ['select-layers', 'ck', '--input', 'ids.json', '--text', 'hi']);
    expect([s['calibration-file'], s['calibration-text']]).toEqual(['ids.json', 'hi']);
    const p = await parsed(byName('plan'), ['plan', 'ck', '--head-dim', '16', '--calibration-seq', '8']);
    expect([p.headDim, p.calibrationSeq]).toEqual([16, 8]);
    expect(cli('verify', '--help').stdout).not.toMatch(/--tokens\b/);
  });

  it('takes --out as the destination of grow, bake and synth, the positional as its alias', async () => {
    const cases: [string, string[], string][] = [
      ['grow', ['grow', 'src'], 'destination'],
      ['bake', ['bake', 'grown'], 'destination'],
      ['synth', ['synth', '--like', 'llama'], 'dir'],
    ];
    for (const [name, argv, positional] of cases) {
      const dest = async (...more: string[]) => destinationArg(name, await parsed(byName(name), [...argv, ...more]), positional);
      expect(await dest('--out', 'o'), name).toBe('o');
      expect(await dest('o'), name).toBe('o');
      expect(await dest('o', '--out', 'o'), name).toBe('o');
      await expect(dest('p', '--out', 'o'), name).rejects.toThrow(/--out "o" and as <\w+> "p"/);
      await expect(dest(), name).rejects.toThrow(/no destination: give --out/);
    }
  });

  it('takes --out in assemble: every positional is then a part', async () => {
    const asm = async (...argv: string[]) => assembleArgs(await parsed(byName('assemble'), ['assemble', ...argv]));
    expect(await asm('--out', 'd', 'p1', 'p2')).toEqual({ dest: 'd', parts: ['p1', 'p2'] });
    expect(await asm('--out', 'd', 'p1')).toEqual({ dest: 'd', parts: ['p1'] });
    expect(await asm('d', 'p1', 'p2')).toEqual({ dest: 'd', parts: ['p1', 'p2'] });
    expect(await asm('d', 'p1', '--out', 'd')).toEqual({ dest: 'd', parts: ['p1'] });
    await expect(asm('--out', 'd')).rejects.toThrow(/no part folders/);
    await expect(asm()).rejects.toThrow(/no destination/);
  });

  it('refuses a destination given twice differently, naming both (exit 2)', () => {
    const r = cli('bake', 'grown', 'here', '--out', 'there');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--out "there" and as <destination> "here"');
  });

  it('stays in step with the library lists it copies (kept light for start-up)', async () => {
    expect([...BACKEND_CHOICES]).toEqual([...(await import('../../src/engines/tfjs-backend.ts')).BACKEND_NAMES]);
    expect([...ENGINE_CHOICES]).toEqual([...(await import('../../src/train/engine.ts')).ENGINES]);
    expect(STAGE_CHOICES).toEqual((await import('../../src/growth/synth.ts')).STAGE_NAMES);
    const plan = yargs([]);
    const { withPlanOptions } = await import('../../src/commands/plan-options.ts');
    const placement = (withPlanOptions(plan) as unknown as { getOptions(): { choices: Record<string, string[]> } }).getOptions()
      .choices.placement;
    expect(placement).toEqual((await import('../../src/growth/operators.ts')).PLACEMENT_METHODS);
    expect(FAMILY_CHOICES).toEqual([...(await import('../../src/spec/families.ts')).FAMILY_NAMES]);
    expect(DEFAULT_TOLERANCE).toBe((await import('../../src/growth/verify.ts')).DEFAULT_TOLERANCE);
  });
});

describe('flm-grow --help and errors', () => {
  it('names an example in every command\'s --help, describes every option, shows no "[default: []]"', () => {
    for (const name of COMMAND_NAMES) {
      const r = cli(name, '--help');
      expect(r.status, name).toBe(0);
      expect(r.stdout, name).toMatch(/Examples:\n {2}# .*\n {2}flm-grow /);
      // each example is one whole command line: a description line ("  # ...") or the command,
      // never a command wrapped onto the next line (it could not be copied)
      const ex = r.stdout
        .slice(r.stdout.indexOf('Examples:\n') + 10)
        .trimEnd()
        .split('\n');
      for (const l of ex) expect(l, `${name}: ${l}`).toMatch(/^ {2}(# |flm-grow )/);
      expect(ex.filter((l) => l.startsWith('  flm-grow ')).length).toBe(ex.filter((l) => l.startsWith('  # ')).length);
      expect(r.stdout, name).not.toContain('[default: []]');
      const bare = r.stdout.split('\n').filter((l) => /^ {2}--[a-z-]+\s+\[/.test(l)); // option lines; a wrapped description line may start with "--steps"
      expect(bare, `${name}: options without a description`).toEqual([]);
    }
  });

  it('prints the help for -h, help, help <command> and no arguments (exit 0)', () => {
    const top = cli('--help');
    expect(top.status).toBe(0);
    for (const args of [['-h'], [], ['help']]) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout, args.join(' ')).toBe(top.stdout);
    }
    const grow = cli('grow', '--help');
    expect(grow.stdout).toContain('--hidden-size');
    for (const args of [
      ['grow', '-h'],
      ['help', 'grow'],
    ]) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout, args.join(' ')).toBe(grow.stdout);
    }
    // a command with required arguments and options still shows its help, not "missing ..."
    const train = cli('train', '-h');
    expect([train.status, train.stderr]).toEqual([0, '']);
    expect(train.stdout).toContain('--log-every');
  });

  it('one suggestion per misspelt option; an error carries its prefix once', () => {
    const r = cli('grow', 'fixtures/hf/llama-tiny-f32', '/tmp/never-written', '--hiden-size', '8');
    expect(r.stderr.trim()).toBe('flm-grow: error: unknown option: --hiden-size (did you mean --hidden-size?)');
    const missing = join(ROOT, 'no-such-corpus.txt');
    const d = cli('train', 'fixtures/hf/llama-tiny-f32', '--data', missing, '--out', '/tmp/never-written', '--steps', '1');
    expect(d.status).toBe(2);
    expect(d.stderr.match(/cannot read training data/g)).toHaveLength(1);
  });

  it('prints a float32 mask value as the number it is (the shortest float32 repr, as numpy)', () => {
    // numpy: str(np.float32(v)) for v = 0.1, 1/3, 0.7, 1e-8, 0.123456789, 2/3
    const numpy = [0.1, 0.33333334, 0.7, 1e-8, 0.12345679, 0.6666667];
    const stored = [0.1, 1 / 3, 0.7, 1e-8, 0.123456789, 2 / 3].map((v) => Math.fround(v));
    expect(stored[0]).not.toBe(0.1); // 0.10000000149011612 as read from an F32 tensor
    expect(stored.map(float32Shortest)).toEqual(numpy);
  });

  it('suggests commands and options, echoes bad numbers as typed', () => {
    expect(cli('grwo', 'a', 'b').stderr).toContain('did you mean "grow"');
    expect(cli('frobnicate').stderr).toMatch(/unknown command "frobnicate"/);
    expect(cli('plan', 'fixtures/hf/llama-tiny-f32', '--hidden_size', '80').stderr).toContain('did you mean --hidden-size');
    expect(cli('plan', 'fixtures/hf/llama-tiny-f32', '--intermediate-size', 'abc').stderr).toContain(
      '--intermediate-size: expected a number, got "abc"',
    );
    const r = cli('train', 'ck', '--data', 'd', '--out', 'o', '--steps', 'five');
    expect(r.stderr).toContain('--steps: expected a number, got "five"');
    expect(r.status).toBe(2);
    expect(suggest('hidden_size', ['hidden-size', 'head-dim'])).toEqual(['hidden-size']);
  });

  it('--version names the version, the backend and the engine', () => {
    const r = cli('--version');
    expect(r.stdout).toMatch(/^flm-grow \d+\.\d+\.\d+\nbackend \(--backend auto\): (wasm|tensorflow)/);
    expect(r.stdout).toMatch(/engine \(train --engine auto\): (tfjs|torch)/);
  });
});

describe('numbers as printed', () => {
  it('one way to print counts, and plurals', () => {
    expect(countLabel(444_100)).toBe('444.1 K');
    expect(countLabel(1_234_567)).toBe('1.2 M');
    expect([plural(1, 'layer'), plural(2, 'layer'), plural(1, 'mismatch', 'mismatches')]).toEqual([
      '1 layer',
      '2 layers',
      '1 mismatch',
    ]);
  });

  it("a written config has rms_norm_eps as the number it is, and not the source's _name_or_path", () => {
    const c = parseConfig(
      {
        model_type: 'llama',
        _name_or_path: '/src',
        hidden_size: 64,
        intermediate_size: 176,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        vocab_size: 320,
        rms_norm_eps: 1e-5,
      },
      'config.json',
    );
    c.rmsNormEps = 1e-5 * (64 / 80);
    const j = configToJson(c);
    expect(JSON.stringify(j.rms_norm_eps)).toBe('0.000008');
    expect(j._name_or_path).toBeUndefined();
  });
});
