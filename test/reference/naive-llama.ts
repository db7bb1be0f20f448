/**
 * A deliberately naive Llama forward pass in float64 with plain loops: no tfjs, no shared code
 * with src/model. It is proven against transformers' own outputs (naive-llama.test.ts) and then
 * judges our tfjs model on the configurations the HF fixtures do not cover (GQA, explicit
 * head_dim, other theta/eps, µP multipliers, masks). Written straight from the equations of
 * SPEC §1–§2, slow on purpose: use it on tiny models only.
 *
 * The other families' features are read from the raw config.json (`c.raw`), not from our
 * parsed fields, and written from transformers' modeling code (read, not copied):
 * - tied head (`tie_word_embeddings`): logits use model.embed_tokens.weight (PreTrainedModel.tie_weights);
 * - Qwen2 (`model_type` qwen2): q/k/v Linear layers with bias (models/qwen2/modeling_qwen2.py, Qwen2Attention);
 * - Qwen3 (`qwen3`): q_norm / k_norm, Qwen3RMSNorm(head_dim, eps=rms_norm_eps) on each head's q and k
 *   after the projection and before RoPE (models/qwen3/modeling_qwen3.py, Qwen3Attention.forward);
 * - Mistral (`mistral`): key s visible from query t only when t - s < sliding_window
 *   (masking_utils.py, sliding_window_overlay: kv_idx > q_idx - sliding_window);
 * - RoPE scaling (`rope_parameters` or `rope_scaling`): modeling_rope_utils.py,
 *   _compute_linear_scaling_rope_parameters, _compute_dynamic_ntk_parameters,
 *   _compute_llama3_parameters, _compute_yarn_parameters (cos and sin times attention_factor).
 */
import type { ModelConfig } from '../../src/spec/config.ts';
import type { MaskSet } from '../../src/checkpoint/masks.ts';

export interface NaiveWeights {
  /** HF names -> float values in HF layout ([out, in] row-major). */
  get(name: string): ArrayLike<number>;
}

type Mat = Float64Array[]; // [T][dim]

function matvecT(w: ArrayLike<number>, outDim: number, inDim: number, x: Float64Array): Float64Array {
  // y = W x with W stored [out, in]
  const y = new Float64Array(outDim);
  for (let o = 0; o < outDim; o++) {
    let s = 0;
    const base = o * inDim;
    for (let i = 0; i < inDim; i++) s += w[base + i] * x[i];
    y[o] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, g: ArrayLike<number>, eps: number, mask?: ArrayLike<number>): Float64Array {
  let ss = 0;
  let cnt = 0;
  for (let i = 0; i < x.length; i++) {
    const m = mask ? mask[i] : 1;
    ss += m * x[i] * x[i];
    cnt += m;
  }
  const r = 1 / Math.sqrt(ss / cnt + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * r * g[i];
  return out;
}

/** HF's default RoPE: inv_freq[i] = theta^(-2i/d); rotate-half layout. */
export function ropeInvFreq(headDim: number, theta: number): Float64Array {
  const f = new Float64Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) f[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  return f;
}

function applyRope(v: Float64Array, off: number, hd: number, pos: number, invFreq: ArrayLike<number>, attn = 1): void {
  const half = hd / 2;
  for (let i = 0; i < half; i++) {
    const ang = pos * invFreq[i];
    const c = Math.cos(ang) * attn;
    const s = Math.sin(ang) * attn;
    const a = v[off + i];
    const b = v[off + i + half];
    v[off + i] = a * c - b * s;
    v[off + i + half] = b * c + a * s;
  }
}

type Json = Record<string, unknown>;

/** inv_freq and attention factor of the config's RoPE for a sequence of T tokens, in float64. */
export function naiveRope(c: ModelConfig, T: number): { inv: Float64Array; attn: number } {
  const raw = c.raw;
  const rp = (raw.rope_parameters ?? raw.rope_scaling ?? {}) as Json;
  const type = (rp.rope_type ?? rp.type ?? 'default') as string;
  const d = c.headDim;
  const theta = c.ropeTheta;
  const maxPos = (raw.max_position_embeddings as number | undefined) ?? 2048;
  const get = (k: string): number | undefined => (typeof rp[k] === 'number' ? (rp[k] as number) : undefined);
  const inv = new Float64Array(d / 2);
  let attn = 1;
  if (type === 'dynamic') {
    // base grows with the sequence beyond max_position_embeddings
    const factor = get('factor') as number;
    const seq = Math.max(T, maxPos);
    const b = theta * Math.pow((factor * seq) / maxPos - (factor - 1), d / (d - 2));
    for (let i = 0; i < d / 2; i++) inv[i] = 1 / Math.pow(b, (2 * i) / d);
    return { inv, attn };
  }
  for (let i = 0; i < d / 2; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / d);
  if (type === 'linear') {
    for (let i = 0; i < d / 2; i++) inv[i] /= get('factor') as number;
  } else if (type === 'llama3') {
    const factor = get('factor') as number,
      low = get('low_freq_factor') as number,
      high = get('high_freq_factor') as number;
    const old = get('original_max_position_embeddings') as number;
    for (let i = 0; i < d / 2; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      let f = wavelen > old / low ? inv[i] / factor : inv[i];
      if (!(wavelen < old / high) && !(wavelen > old / low)) {
        const smooth = (old / wavelen - low) / (high - low);
        f = ((1 - smooth) * f) / factor + smooth * f;
      }
      inv[i] = f;
    }
  } else if (type === 'yarn') {
    const orig = get('original_max_position_embeddings') ?? maxPos;
    const factor = get('factor') ?? maxPos / orig;
    const ms = (s: number, m: number) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
    const mscale = get('mscale'),
      mscaleAll = get('mscale_all_dim');
    attn = get('attention_factor') ?? (mscale && mscaleAll ? ms(factor, mscale) / ms(factor, mscaleAll) : ms(factor, 1));
    const bf = get('beta_fast') ?? 32,
      bs = get('beta_slow') ?? 1;
    const dimOf = (rot: number) => (d * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
    let lo = dimOf(bf),
      hi = dimOf(bs);
    if (rp.truncate !== false) {
      lo = Math.floor(lo);
      hi = Math.ceil(hi);
    }
    lo = Math.max(lo, 0);
    hi = Math.min(hi, d - 1);
    if (lo === hi) hi += 0.001;
    for (let i = 0; i < d / 2; i++) {
      const ramp = Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
      const extrapolationFactor = 1 - ramp;
      const interp = inv[i] / factor;
      inv[i] = interp * (1 - extrapolationFactor) + inv[i] * extrapolationFactor;
    }
  } else if (type !== 'default') throw new Error(`naive: RoPE type ${type}`);
  return { inv, attn };
}

export interface NaiveOutput {
  /** [T][V] */
  logits: Float64Array[];
  /** hidden[n][t] for n = 0..L (HF convention: L is after the final norm). */
  hidden: Float64Array[][];
}

/** One sequence (no batch): ids [T]. */
export function naiveForward(
  c: ModelConfig,
  w: NaiveWeights,
  ids: number[],
  opts: { masks?: MaskSet; invFreq?: ArrayLike<number> } = {},
): NaiveOutput {
  const H = c.hiddenSize,
    nh = c.numHeads,
    nkv = c.numKvHeads,
    hd = c.headDim,
    F = c.intermediateSize,
    V = c.vocabSize;
  const T = ids.length;
  const m = opts.masks;
  const rope = naiveRope(c, T);
  const invFreq = opts.invFreq ?? rope.inv;
  const attnFactor = rope.attn;
  const modelType = String(c.raw.model_type ?? '').toLowerCase();
  const biases = modelType === 'qwen2';
  const qkNorm = modelType === 'qwen3';
  const window = modelType === 'mistral' && typeof c.raw.sliding_window === 'number' ? c.raw.sliding_window : Infinity;
  const tied = c.raw.tie_word_embeddings === true;
  const inMult = c.useMup ? c.inputMult : 1;
  const outMult = c.useMup ? c.outputMult / c.mupScaleFactor : 1;
  const emb = w.get('model.embed_tokens.weight');
  let x: Mat = ids.map((id) => {
    const v = new Float64Array(H);
    for (let i = 0; i < H; i++) v[i] = emb[id * H + i] * inMult * (m ? m.hidden[i] : 1);
    return v;
  });
  const hidden: Float64Array[][] = [x.map((r) => r.slice())];
  const group = nh / nkv;
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const lm = m?.layers[l];
    const r = lm ? lm.residual : 1;
    const g1 = w.get(p + 'input_layernorm.weight');
    const wq = w.get(p + 'self_attn.q_proj.weight'),
      wk = w.get(p + 'self_attn.k_proj.weight');
    const wv = w.get(p + 'self_attn.v_proj.weight'),
      wo = w.get(p + 'self_attn.o_proj.weight');
    const q: Mat = [],
      k: Mat = [],
      v: Mat = [];
    const addBias = (y: Float64Array, name: string) => {
      if (!biases) return y;
      const b = w.get(p + name);
      for (let i = 0; i < y.length; i++) y[i] += b[i];
      return y;
    };
    const headNorm = (y: Float64Array, heads: number, name: string) => {
      if (!qkNorm) return;
      const g = w.get(p + name);
      for (let j = 0; j < heads; j++) {
        let ss = 0;
        for (let i = 0; i < hd; i++) ss += y[j * hd + i] * y[j * hd + i];
        const r = 1 / Math.sqrt(ss / hd + c.rmsNormEps);
        for (let i = 0; i < hd; i++) y[j * hd + i] = y[j * hd + i] * r * g[i];
      }
    };
    for (let t = 0; t < T; t++) {
      const h = rmsnorm(x[t], g1, c.rmsNormEps, m?.hidden);
      q.push(addBias(matvecT(wq, nh * hd, H, h), 'self_attn.q_proj.bias'));
      k.push(addBias(matvecT(wk, nkv * hd, H, h), 'self_attn.k_proj.bias'));
      v.push(addBias(matvecT(wv, nkv * hd, H, h), 'self_attn.v_proj.bias'));
      headNorm(q[t], nh, 'self_attn.q_norm.weight');
      headNorm(k[t], nkv, 'self_attn.k_norm.weight');
      for (let j = 0; j < nh; j++) applyRope(q[t], j * hd, hd, t, invFreq, attnFactor);
      for (let j = 0; j < nkv; j++) applyRope(k[t], j * hd, hd, t, invFreq, attnFactor);
    }
    const scale = 1 / Math.sqrt(hd);
    const x2: Mat = [];
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(nh * hd);
      for (let j = 0; j < nh; j++) {
        const kvh = Math.floor(j / group);
        const sc = new Float64Array(t + 1);
        let mx = -Infinity;
        const first = Math.max(0, t - window + 1);
        for (let s = 0; s < first; s++) sc[s] = -Infinity;
        for (let s = first; s <= t; s++) {
          let d = 0;
          for (let i = 0; i < hd; i++) d += q[t][j * hd + i] * k[s][kvh * hd + i];
          sc[s] = d * scale;
          mx = Math.max(mx, sc[s]);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) {
          sc[s] = s < first ? 0 : Math.exp(sc[s] - mx);
          z += sc[s];
        }
        const hm = lm ? lm.heads[j] : 1;
        for (let s = 0; s <= t; s++) {
          const a = (sc[s] / z) * hm;
          for (let i = 0; i < hd; i++) att[j * hd + i] += a * v[s][kvh * hd + i];
        }
      }
      const o = matvecT(wo, H, nh * hd, att);
      const nx = new Float64Array(H);
      for (let i = 0; i < H; i++) nx[i] = x[t][i] + r * (m ? m.hidden[i] : 1) * o[i];
      x2.push(nx);
    }
    const g2 = w.get(p + 'post_attention_layernorm.weight');
    const wg = w.get(p + 'mlp.gate_proj.weight'),
      wu = w.get(p + 'mlp.up_proj.weight'),
      wd = w.get(p + 'mlp.down_proj.weight');
    x = x2.map((xt) => {
      const h = rmsnorm(xt, g2, c.rmsNormEps, m?.hidden);
      const gt = matvecT(wg, F, H, h);
      const up = matvecT(wu, F, H, h);
      const act = new Float64Array(F);
      for (let f = 0; f < F; f++) act[f] = (gt[f] / (1 + Math.exp(-gt[f]))) * up[f] * (lm ? lm.ffn[f] : 1);
      const d = matvecT(wd, H, F, act);
      const out = new Float64Array(H);
      for (let i = 0; i < H; i++) out[i] = xt[i] + r * (m ? m.hidden[i] : 1) * d[i];
      return out;
    });
    if (l < c.numLayers - 1) hidden.push(x.map((row) => row.slice()));
  }
  const gf = w.get('model.norm.weight');
  const normed = x.map((xt) => rmsnorm(xt, gf, c.rmsNormEps, m?.hidden));
  hidden.push(normed);
  const head = w.get(tied ? 'model.embed_tokens.weight' : 'lm_head.weight');
  const logits = normed.map((h) => {
    const lg = matvecT(head, V, H, h);
    // vocab mask m: softmax weight of id v times m[v], i.e. logit + ln m[v] (-inf at 0, 0 at 1)
    for (let vv = 0; vv < V; vv++) lg[vv] = lg[vv] * outMult + (m ? Math.log(m.vocab[vv]) : 0);
    return lg;
  });
  return { logits, hidden };
}
