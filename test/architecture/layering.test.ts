/**
 * Dependencies point down: cli → commands → pipeline → growth/train → model → checkpoint/engines
 * → spec → util (the layers in imports.ts). Shipped src/ never imports
 * test/, growth/ and train/ never import each other, and the top-level areas form no cycle.
 */
import { describe, expect, it } from 'vitest';
import { allEdges, areaCycles, areaOf, LAYERS, sourceFiles, upwardImports, type Edge } from './imports.ts';

const edges = allEdges();

describe('src/ layering', () => {
  it('reads a plausible import graph', () => {
    expect(sourceFiles().length).toBeGreaterThan(50);
    expect(edges.length).toBeGreaterThan(200);
    expect(edges.some((e) => e.from === 'src/cli.ts' && e.to === 'src/commands/index.ts')).toBe(true);
  });

  it('places every area in a layer', () => {
    const areas = new Set(sourceFiles().map(areaOf));
    expect([...areas].filter((a) => !LAYERS.some((l) => l.includes(a)))).toEqual([]);
  });

  it('has no upward import', () => {
    expect(upwardImports(edges).map((v) => `${v.edge.from} -> ${v.edge.spec}: ${v.why}`)).toEqual([]);
  });

  it('has no import cycle between top-level areas', () => {
    expect(areaCycles(edges)).toEqual([]);
  });

  it('catches the kinds of import it forbids', () => {
    const e = (from: string, to: string): Edge => ({ from, to, spec: to });
    const bad = [
      e('src/growth/grow.ts', 'src/commands/progress.ts'),
      e('src/checkpoint/checkpoint.ts', 'src/model/llama.ts'),
      e('src/model/llama.ts', 'src/train/adamw.ts'),
      e('src/train/trainer.ts', 'src/growth/grow.ts'),
      e('src/growth/grow.ts', 'src/train/adamw.ts'),
      e('src/growth/grow.ts', 'test/reference/naive-llama.ts'),
      e('src/spec/config.ts', 'src/checkpoint/checkpoint.ts'),
      e('src/newarea.ts', 'src/util/errors.ts'),
    ];
    expect(upwardImports(bad).map((v) => v.edge.from)).toEqual(bad.map((x) => x.from));
    expect(
      upwardImports([e('src/commands/grow.ts', 'src/growth/grow.ts'), e('src/growth/grow.ts', 'src/checkpoint/checkpoint.ts')]),
    ).toEqual([]);
    expect(
      areaCycles([e('src/spec/arch.ts', 'src/checkpoint/manifest.ts'), e('src/checkpoint/manifest.ts', 'src/spec/arch.ts')]),
    ).toEqual([['checkpoint', 'spec']]);
  });
});
