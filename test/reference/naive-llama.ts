/**
 * A deliberately naive Llama forward pass in float64 with plain loops: no tfjs, no shared code
 * with src/model. It is proven against transformers' own outputs (naive-llama.test.ts) and then
 * judges our tfjs model on the configurations the HF fixtures do not cover (GQA, explicit
 * head_dim, other theta/eps, µP multipliers, masks). Written straight from the equations of
 * SPEC §1–§2, slow on purpose: use it on tiny models only.
 */
import type { ModelConfig } from '../../src/config.ts';
import type { MaskSet } from '../../src/masks.ts';

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

function applyRope(v: Float64Array, off: number, hd: number, pos: number, invFreq: ArrayLike<number>): void {
  const half = hd / 2;
  for (let i = 0; i < half; i++) {
    const ang = pos * invFreq[i];
    const c = Math.cos(ang);
    const s = Math.sin(ang);
    const a = v[off + i];
    const b = v[off + i + half];
    v[off + i] = a * c - b * s;
    v[off + i + half] = b * c + a * s;
  }
}

export interface NaiveOutput {
  /** [T][V] */
  logits: Float64Array[];
  /** hidden[n][t] for n = 0..L (HF convention: L is after the final norm). */
  hidden: Float64Array[][];
}

/** One sequence (no batch): ids [T]. */
export function naiveForward(c: ModelConfig, w: NaiveWeights, ids: number[], opts: { masks?: MaskSet; invFreq?: ArrayLike<number> } = {}): NaiveOutput {
  const H = c.hiddenSize, nh = c.numHeads, nkv = c.numKvHeads, hd = c.headDim, F = c.intermediateSize, V = c.vocabSize;
  const T = ids.length;
  const m = opts.masks;
  const invFreq = opts.invFreq ?? ropeInvFreq(hd, c.ropeTheta);
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
    const wq = w.get(p + 'self_attn.q_proj.weight'), wk = w.get(p + 'self_attn.k_proj.weight');
    const wv = w.get(p + 'self_attn.v_proj.weight'), wo = w.get(p + 'self_attn.o_proj.weight');
    const q: Mat = [], k: Mat = [], v: Mat = [];
    for (let t = 0; t < T; t++) {
      const h = rmsnorm(x[t], g1, c.rmsNormEps, m?.hidden);
      q.push(matvecT(wq, nh * hd, H, h));
      k.push(matvecT(wk, nkv * hd, H, h));
      v.push(matvecT(wv, nkv * hd, H, h));
      for (let j = 0; j < nh; j++) applyRope(q[t], j * hd, hd, t, invFreq);
      for (let j = 0; j < nkv; j++) applyRope(k[t], j * hd, hd, t, invFreq);
    }
    const scale = 1 / Math.sqrt(hd);
    const x2: Mat = [];
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(nh * hd);
      for (let j = 0; j < nh; j++) {
        const kvh = Math.floor(j / group);
        const sc = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let d = 0;
          for (let i = 0; i < hd; i++) d += q[t][j * hd + i] * k[s][kvh * hd + i];
          sc[s] = d * scale;
          mx = Math.max(mx, sc[s]);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) { sc[s] = Math.exp(sc[s] - mx); z += sc[s]; }
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
    const wg = w.get(p + 'mlp.gate_proj.weight'), wu = w.get(p + 'mlp.up_proj.weight'), wd = w.get(p + 'mlp.down_proj.weight');
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
  const head = w.get('lm_head.weight');
  const logits = normed.map((h) => {
    const lg = matvecT(head, V, H, h);
    for (let vv = 0; vv < V; vv++) lg[vv] = m && m.vocab[vv] === 0 ? -Infinity : lg[vv] * outMult;
    return lg;
  });
  return { logits, hidden };
}
