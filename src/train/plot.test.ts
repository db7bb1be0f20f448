import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Resvg } from '@resvg/resvg-js';
import { describe, expect, it } from 'vitest';
import { PlotError, lossSeriesFromMetrics, plotLossCurves, renderLossCurvesSvg, type PlotSeries } from './plot.ts';
import type { MetricsRecord } from './metrics.ts';

const dir = mkdtempSync(join(tmpdir(), 'flm-plot-'));

// x spans exactly [0, 1000] so the x scale domain is [0, 1000] and pixel positions are predictable.
const series: PlotSeries[] = [
  { name: 'grown 中文', points: Array.from({ length: 101 }, (_, i) => ({ x: i * 10, y: 6 - i / 25 })) },
  { name: 'scratch', points: Array.from({ length: 101 }, (_, i) => ({ x: i * 10, y: i === 50 ? NaN : 6.5 - i / 30 })) },
];
const base = { title: 'Loss curves', xLabel: 'step', yLabel: 'loss', width: 720, height: 400, growthMarks: [250, 600] };

describe('plotLossCurves', () => {
  it('writes a well-formed SVG with titles, series names and growth rules at the right x', async () => {
    const output = join(dir, 'sub', 'loss.svg');
    await plotLossCurves(series, { ...base, output });
    const svg = readFileSync(output, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    // resvg parses XML strictly: a malformed document throws here.
    const size = new Resvg(svg).getBBox();
    expect(size?.width).toBeGreaterThan(700);
    for (const text of ['grown 中文', 'scratch', 'Loss curves', '>step<', '>loss<', '>growth<']) expect(svg).toContain(text);
    // One rule per growth mark, at x/1000 of the 720-px plot width.
    const rules = [...svg.matchAll(/aria-label="step: (\d+); label: growth"[^>]*transform="translate\(([\d.]+),0\)"/g)];
    expect(rules.map((m) => [Number(m[1]), Number(m[2])])).toEqual([
      [250, 180],
      [600, 432],
    ]);
  });

  it('writes a PNG (resvg) when the output ends in .png', async () => {
    const output = join(dir, 'loss.png');
    await plotLossCurves(series, { ...base, output });
    const png = readFileSync(output);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    // IHDR width/height (big-endian at bytes 16..23): rendered at 2x the SVG size.
    const svgW = Number(/width="(\d+)"/.exec(await renderLossCurvesSvg(series, base))![1]);
    expect(png.readUInt32BE(16)).toBe(2 * svgW);
    expect(png.readUInt32BE(20)).toBeGreaterThan(800);
  });

  it('rejects unknown formats and empty input with a PlotError naming the output', async () => {
    const output = join(dir, 'loss.jpg');
    await expect(plotLossCurves(series, { ...base, output })).rejects.toThrow(PlotError);
    await expect(plotLossCurves(series, { ...base, output })).rejects.toThrow(output);
    expect(existsSync(output)).toBe(false);
    await expect(plotLossCurves([{ name: 'x', points: [] }], { ...base, output: join(dir, 'e.svg') })).rejects.toThrow(/no data/);
  });
});

describe('lossSeriesFromMetrics', () => {
  it('extracts train/eval loss and growth steps', () => {
    const recs: MetricsRecord[] = [
      { step: 0, tokens: 10, loss: 5, lr: 1, gradNorm: 1, tokensPerSec: 1 },
      { step: 1, tokens: 20, loss: 4, evalLoss: 4.5, lr: 1, gradNorm: 1, tokensPerSec: 1 },
      { event: 'growth', step: 2, stage: 1 },
      { step: 2, tokens: 30, loss: 3, lr: 1, gradNorm: 1, tokensPerSec: 1 },
    ];
    const { series: s, growthMarks } = lossSeriesFromMetrics(recs, 'run A ');
    expect(s).toEqual([
      {
        name: 'run A train loss',
        points: [
          { x: 0, y: 5 },
          { x: 1, y: 4 },
          { x: 2, y: 3 },
        ],
      },
      { name: 'run A eval loss', points: [{ x: 1, y: 4.5 }] },
    ]);
    expect(growthMarks).toEqual([2]);
  });
});
