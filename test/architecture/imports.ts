/**
 * The import graph of src/ (test files left out), for the layering test and for measuring it.
 * Each module belongs to an area: its top-level folder under src/ (`growth`, `train`, ...), or for a file
 * directly in src/ its own name (`cli`, `pipeline`).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';

export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');
export const SRC = join(ROOT, 'src');

export interface Edge {
  from: string;
  to: string;
  spec: string;
}

/** Shipped source files of src/, as paths relative to the repository root with `/` separators. */
export function sourceFiles(dir = SRC): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts')) out.push(rel(p));
  }
  return out.sort();
}

const rel = (p: string) => relative(ROOT, p).split(sep).join('/');

/** Every relative import of `file` (static, re-exports, dynamic and `import()` types), resolved to repo paths. */
export function importsOf(file: string): Edge[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const info = ts.preProcessFile(text, true, true);
  return info.importedFiles
    .filter((f) => f.fileName.startsWith('.'))
    .map((f) => ({ from: file, to: rel(resolve(ROOT, dirname(file), f.fileName)), spec: f.fileName }));
}

/** `src/growth/grow.ts` → `growth`; `src/pipeline.ts` → `pipeline`; outside src/ → the first folder (`test`). */
export function areaOf(path: string): string {
  const parts = path.split('/');
  if (parts[0] !== 'src') return parts[0];
  return parts.length > 2 ? parts[1] : parts[1].replace(/\.ts$/, '');
}

/**
 * Layers, top to bottom: a module may import its own layer or any below it. Areas missing here fail the test,
 * so a new top-level module has to be placed.
 */
export const LAYERS: string[][] = [
  ['cli'],
  ['commands'],
  ['pipeline'],
  ['growth', 'train'],
  ['model'],
  ['checkpoint', 'engines'],
  ['spec'],
  ['util'],
];

/** Same-layer areas that must not import one another in either direction. */
export const SEPARATE: [string, string][] = [['growth', 'train']];

export function rankOf(area: string): number | undefined {
  const i = LAYERS.findIndex((l) => l.includes(area));
  return i < 0 ? undefined : LAYERS.length - i;
}

export interface Violation {
  edge: Edge;
  why: string;
}

export function upwardImports(edges: Edge[]): Violation[] {
  const out: Violation[] = [];
  for (const edge of edges) {
    const a = areaOf(edge.from),
      b = areaOf(edge.to);
    if (b === 'test') {
      out.push({ edge, why: 'src imports test/' });
      continue;
    }
    if (a === b) continue;
    const ra = rankOf(a),
      rb = rankOf(b);
    if (ra === undefined || rb === undefined) {
      out.push({ edge, why: `area not placed in LAYERS: ${ra === undefined ? a : b}` });
      continue;
    }
    if (rb > ra) out.push({ edge, why: `${a} imports ${b}, a layer above it` });
    else if (SEPARATE.some(([x, y]) => (x === a && y === b) || (x === b && y === a)))
      out.push({ edge, why: `${a} and ${b} must not import each other` });
  }
  return out;
}

/** Strongly connected groups of more than one area in the area graph (Tarjan). */
export function areaCycles(edges: Edge[]): string[][] {
  const g = new Map<string, Set<string>>();
  for (const e of edges) {
    const a = areaOf(e.from),
      b = areaOf(e.to);
    if (!g.has(a)) g.set(a, new Set());
    if (!g.has(b)) g.set(b, new Set());
    if (a !== b) g.get(a)!.add(b);
  }
  let next = 0;
  const index = new Map<string, number>(),
    low = new Map<string, number>(),
    stack: string[] = [],
    on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    on.add(v);
    for (const w of g.get(v)!) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of [...g.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}

export function allEdges(): Edge[] {
  return sourceFiles().flatMap(importsOf);
}
