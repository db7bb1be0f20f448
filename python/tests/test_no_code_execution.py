"""Nothing flm-grow reads may execute code (issue 21, "untrusted files").

Checkpoints, manifests, masks, optimizer state and data come from users and shared filesystems;
a pickle in any of them runs code when unpickled. So python/ (the torch engine and its tests)
must not unpickle: no torch.load without weights_only=True, no pickle/dill/shelve/marshal/joblib,
no numpy load with allow_pickle=True, no torch.jit.load, no eval/exec/compile, no
trust_remote_code=True, no import by a computed name outside the package. torch.distributed.checkpoint
is used only through flm_grow_torch/dcp_safe.py: DCP's FileSystemReader.read_metadata reads
`<dir>/.metadata` with a plain pickle.load (torch 2.13, torch/distributed/checkpoint/filesystem.py),
so a tampered distributed checkpoint would run code on load; dcp_safe reads it with an unpickler
that builds only DCP's metadata classes (tested below on a hostile index). src/ (TypeScript) must not eval: no eval(, new Function(, vm.run*.

The audit itself (when this test was written): python/ and src/ had none of these; every tensor
file is read by the package's own safetensors reader (safetensors_io.py) and every JSON file
with json.load. The checker is tested on a snippet holding each forbidden use, so it can fail.
"""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def forbidden_uses(source: str, filename: str) -> list[str]:
    """Every use of a code-executing loader in `source`, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        at = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] in UNPICKLERS:
                    found.append(f"{at}: imports {n} (unpickling runs code)")
                if n.startswith("torch.distributed.checkpoint"):
                    found.append(f"{at}: imports {n} (its .metadata is read with pickle.load)")
            if isinstance(node, ast.ImportFrom) and node.module == "torch.distributed":
                if any(a.name == "checkpoint" for a in node.names):
                    found.append(f"{at}: imports torch.distributed.checkpoint (its .metadata is read with pickle.load)")
        elif isinstance(node, ast.Attribute) and _dotted(node).startswith("torch.distributed.checkpoint"):
            found.append(f"{at}: uses torch.distributed.checkpoint (its .metadata is read with pickle.load)")
        elif isinstance(node, ast.Call):
            f = _dotted(node.func)
            if isinstance(node.func, ast.Name) and f in ("eval", "exec", "compile", "__import__"):
                found.append(f"{at}: calls {f}()")
            elif f == "torch.load" and not _is_true(_kw(node, "weights_only")):
                found.append(f"{at}: torch.load without weights_only=True")
            elif f in ("torch.jit.load", "torch.package.PackageImporter"):
                found.append(f"{at}: {f} runs serialized code")
            elif f.endswith(".load") and _is_true(_kw(node, "allow_pickle")):
                found.append(f"{at}: {f}(allow_pickle=True)")
            elif f in ("importlib.import_module", "import_module"):
                pkg = _kw(node, "package")
                if len(node.args) < 2 and not (isinstance(pkg, ast.Name) and pkg.id == "__name__"):
                    found.append(f"{at}: import_module of a computed name outside the package")
            if _is_true(_kw(node, "trust_remote_code")):
                found.append(f"{at}: trust_remote_code=True runs a checkpoint's own Python")
    return found


TS_EVAL = re.compile(r"(?<!\.)(?<!get )\beval\s*\(|\bnew\s+Function\s*\(|\bvm\.run\w*\s*\(|\bvm\.Script\b")


def test_python_reads_nothing_that_runs_code():
    files = sorted((ROOT / "python").rglob("*.py"))
    assert len(files) > 10
    # dcp_safe.py is the one module that may import torch.distributed.checkpoint (see the docstring)
    found = [
        u for p in files if p.name != "dcp_safe.py" for u in forbidden_uses(p.read_text(), str(p.relative_to(ROOT)))
    ]
    assert found == []


def test_typescript_evaluates_no_code():
    files = [p for p in sorted((ROOT / "src").rglob("*.ts")) if not p.name.endswith(".test.ts")]
    assert len(files) > 50
    found = [
        f"{p.relative_to(ROOT)}:{i + 1}: {line.strip()}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines())
        if TS_EVAL.search(line) and not line.lstrip().startswith(("//", "*"))
    ]
    assert found == []


def test_the_checker_finds_each_forbidden_use():
    bad = "\n".join(
        [
            "import pickle",
            "import dill",
            "from joblib import load",
            "import torch",
            "import numpy as np",
            "import torch.distributed.checkpoint as dcp",
            "from torch.distributed import checkpoint",
            "x = torch.load(p)",
            "y = torch.load(p, weights_only=False)",
            "ok = torch.load(p, weights_only=True)",
            "z = np.load(p, allow_pickle=True)",
            "m = torch.jit.load(p)",
            "eval(s)",
            "exec(s)",
            "torch.distributed.checkpoint.load(sd, checkpoint_id=p)",
            "AutoModel.from_pretrained(p, trust_remote_code=True)",
            "importlib.import_module(name)",
            "model.eval()",
            "load_model(p).eval()",
            "importlib.import_module(f'.{m}', __name__)",
        ]
    )
    found = forbidden_uses(bad, "bad.py")
    lines = sorted({int(f.split(":")[1]) for f in found})
    # every line but the allowed ones (weights_only=True, model.eval(), an import inside the package)
    assert lines == [1, 2, 3, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17]
    assert TS_EVAL.search("const f = new Function('return 1');")
    assert TS_EVAL.search("eval(code)")
    assert TS_EVAL.search("vm.runInNewContext(code, {})")
    assert not TS_EVAL.search("const evaluate = retrieval(x);")


def test_side_files_copied_into_outputs_are_never_code():
    from flm_grow_torch.checkpointing import SIDE_FILE

    # one pattern for both engines: python/flm_grow_torch/_data/manifest.json, compiled by each
    data = json.loads((ROOT / "python" / "flm_grow_torch" / "_data" / "manifest.json").read_text())
    assert SIDE_FILE.pattern == data["sideFilePattern"]
    ts = (ROOT / "src" / "checkpoint" / "manifest.ts").read_text()
    assert "SIDE_FILE_PATTERN = new RegExp(MANIFEST_RULES.sideFilePattern)" in ts
    for pattern in (SIDE_FILE,):
        for ok in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json"):
            assert pattern.match(ok), ok
        for code in ("tokenizer.py", "tokenization_custom.py", "tokenizer_fast.pyc", "tokenizer.so"):
            assert not pattern.match(code), code


def test_distributed_checkpoint_index_cannot_run_code(tmp_path):
    """A real sharded save loads through dcp_safe; an index that unpickles to os.system is refused
    before anything runs (the same file through DCP's own reader would call it)."""
    import pytest
    import torch

    from flm_grow_torch import dcp_safe

    ck = tmp_path / "sharded"
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    dcp_safe.save(str(ck), {"w": w})  # no process group: a one-process save
    got = {"w": torch.zeros(3, 4)}
    dcp_safe.load(str(ck), got, no_dist=True)
    assert torch.equal(got["w"], w)

    marker = tmp_path / "ran"

    # pickle protocol 0 for os.system("touch <marker>"), written out by hand (no pickle import here)
    (ck / ".metadata").write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(dcp_safe.UnsafeMetadata, match=r"\.metadata: refers to (posix|os)\.system"):
        dcp_safe.load(str(ck), {"w": torch.zeros(3, 4)}, no_dist=True)
    assert not marker.exists()
