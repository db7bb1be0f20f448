/**
 * Loss curves as SVG or PNG (by output extension), drawn with Vega-Lite and rendered headless by
 * Vega's SVG renderer; PNG rasterises that SVG with resvg (native, loaded only when needed).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { FlmGrowError } from '../util/errors.ts';
import { partitionMetrics, type MetricsRecord } from './metrics.ts';

export interface PlotPoint {
  x: number;
  y: number;
}
export interface PlotSeries {
  name: string;
  points: PlotPoint[];
}

export interface PlotOptions {
  /** x positions (steps) where the model grew: drawn as dashed vertical rules. */
  growthMarks?: number[];
  title: string;
  xLabel: string;
  yLabel: string;
  /** .svg or .png */
  output: string;
  width?: number;
  height?: number;
  logY?: boolean;
  /** Longer series are thinned evenly to this many points, keeping SVGs small (default 5000). */
  maxPointsPerSeries?: number;
}

export class PlotError extends FlmGrowError {
  constructor(message: string) {
    super('PlotError', message);
  }
}

function thin(points: PlotPoint[], max: number): PlotPoint[] {
  const finite = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  if (finite.length <= max) return finite;
  const out: PlotPoint[] = [];
  const stride = (finite.length - 1) / (max - 1);
  for (let i = 0; i < max; i++) out.push(finite[Math.round(i * stride)]);
  return out;
}

type VlLayer = Extract<vl.TopLevelSpec, { layer: unknown[] }>['layer'][number];

/** The Vega-Lite spec, exposed for tests and for users who want to restyle it. */
export function lossCurvesSpec(series: PlotSeries[], opts: Omit<PlotOptions, 'output'>): vl.TopLevelSpec {
  const max = opts.maxPointsPerSeries ?? 5000;
  const rows = series.flatMap((s) => thin(s.points, max).map((p) => ({ series: s.name, x: p.x, y: p.y })));
  const growth = (opts.growthMarks ?? []).map((x) => ({ x, label: 'growth' }));
  const x = { field: 'x', type: 'quantitative', title: opts.xLabel } as const;
  const layer: VlLayer[] = [
    {
      data: { values: rows },
      mark: { type: 'line', strokeWidth: 1.5, clip: true },
      encoding: {
        x,
        y: {
          field: 'y',
          type: 'quantitative',
          title: opts.yLabel,
          scale: { zero: false, type: opts.logY === true ? 'log' : 'linear' },
        },
        color: {
          field: 'series',
          type: 'nominal',
          title: null,
          // the default palette has 10 colours: more series would repeat them
          scale: { domain: series.map((s) => s.name), ...(series.length > 10 ? { scheme: 'tableau20' } : {}) },
        },
      },
    },
  ];
  if (growth.length > 0) {
    layer.push({
      data: { values: growth },
      mark: { type: 'rule', color: '#777', strokeDash: [5, 4], strokeWidth: 1 },
      encoding: {
        x,
        // A constant-valued channel gives the rules their own legend entry.
        strokeDash: { field: 'label', type: 'nominal', title: null, scale: { domain: ['growth'], range: [[5, 4]] } },
      },
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: opts.title,
    width: opts.width ?? 720,
    height: opts.height ?? 400,
    background: 'white',
    config: { font: 'DejaVu Sans, Helvetica, Arial, sans-serif', legend: { labelLimit: 400 } },
    layer,
  };
}

export async function renderLossCurvesSvg(series: PlotSeries[], opts: Omit<PlotOptions, 'output'>): Promise<string> {
  if (series.length === 0 || series.every((s) => s.points.length === 0))
    throw new PlotError(`plot "${opts.title}": no data points to plot`);
  const names = new Set<string>();
  for (const s of series) {
    if (names.has(s.name)) throw new PlotError(`plot "${opts.title}": duplicate series name "${s.name}"`);
    names.add(s.name);
  }
  const { spec } = vl.compile(lossCurvesSpec(series, opts));
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

async function rasterize(svg: string, output: string): Promise<Buffer> {
  let Resvg: typeof import('@resvg/resvg-js').Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (e) {
    throw new PlotError(
      `${output}: PNG output needs @resvg/resvg-js, which failed to load (${(e as Error).message}); write .svg instead`,
    );
  }
  // Vega lays out text by estimated metrics; any sans font renders it acceptably.
  return new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' }, fitTo: { mode: 'zoom', value: 2 } })
    .render()
    .asPng();
}

/** Write the curves to opts.output (.svg or .png), creating its folder. */
export async function plotLossCurves(series: PlotSeries[], opts: PlotOptions): Promise<void> {
  const ext = extname(opts.output).toLowerCase();
  if (ext !== '.svg' && ext !== '.png')
    throw new PlotError(`${opts.output}: unsupported plot format "${ext}" (use .svg or .png)`);
  const svg = await renderLossCurvesSvg(series, opts);
  const data = ext === '.svg' ? svg : await rasterize(svg, opts.output);
  try {
    mkdirSync(dirname(opts.output), { recursive: true });
    writeFileSync(opts.output, data);
  } catch (e) {
    throw new PlotError(`${opts.output}: cannot write plot: ${(e as Error).message}`);
  }
}

/**
 * Train (and eval, where logged) loss against step from a metrics log, with its growth steps.
 * `prefix` names the run when several are overlaid.
 */
export function lossSeriesFromMetrics(
  records: readonly MetricsRecord[],
  prefix = '',
): { series: PlotSeries[]; growthMarks: number[] } {
  const { steps, growth } = partitionMetrics(records);
  const train = steps.map((m) => ({ x: m.step, y: m.loss }));
  const evalPts = steps.filter((m) => m.evalLoss !== undefined).map((m) => ({ x: m.step, y: m.evalLoss! }));
  const series: PlotSeries[] = [{ name: `${prefix}train loss`, points: train }];
  if (evalPts.length > 0) series.push({ name: `${prefix}eval loss`, points: evalPts });
  return { series, growthMarks: growth.map((g) => g.step) };
}
