# Digest of fixtures/hf/* made with numpy only (independent of flm-grow's TypeScript reader):
# for every tensor of every safetensors file, dtype, shape, file, float64 sum of its values,
# sum of |values| and the first 4 and last value. Run from the repo root:
#   python3 test/checkpoint/make_fixture_digest.py > test/checkpoint/fixture-digest.json
import json, os, struct, sys
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
NP = {'F32': '<f4', 'F64': '<f8', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4', 'U8': 'u1', 'I8': 'i1', 'BOOL': 'u1'}

def values(dtype, raw):
    if dtype == 'BF16':  # bf16 is the top half of an f32
        return (np.frombuffer(raw, '<u2').astype(np.uint32) << 16).view('<f4').astype(np.float64)
    return np.frombuffer(raw, NP[dtype]).astype(np.float64)

def digest(path):
    with open(path, 'rb') as f:
        data = f.read()
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n].decode('utf-8'))
    out = {}
    for name, v in header.items():
        if name == '__metadata__':
            continue
        b, e = v['data_offsets']
        x = values(v['dtype'], data[8 + n + b:8 + n + e])
        out[name] = {'dtype': v['dtype'], 'shape': v['shape'], 'sum': float(x.sum()), 'abs_sum': float(np.abs(x).sum()),
                     'first': [float(t) for t in x[:4]], 'last': float(x[-1])}
    return out

result = {}
hf = os.path.join(ROOT, 'fixtures', 'hf')
for d in sorted(os.listdir(hf)):
    p = os.path.join(hf, d)
    if not os.path.isdir(p):
        continue
    tensors = {}
    for fn in sorted(os.listdir(p)):
        if fn.startswith('model') and fn.endswith('.safetensors'):
            for name, t in digest(os.path.join(p, fn)).items():
                t['file'] = fn
                tensors[name] = t
    result[d] = {'tensors': tensors, 'reference': digest(os.path.join(p, 'reference.safetensors'))}
json.dump(result, sys.stdout, indent=1, sort_keys=True)
sys.stdout.write('\n')
