"""A non-editable install (what `pip install .` and a wheel give) carries the configs and
results the package reads: modes, policies, the QAD figures the demo quotes."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pip_install_ships_modes_policies_and_results(tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = (
        "import ditto_spu, json\n"
        "from ditto_spu.configs_dir import configs_dir\n"
        "from ditto_spu.models import available_modes, load_mode\n"
        "from ditto_spu.policy import load_policy\n"
        "from ditto_spu.demo import STOCK_POLICY, qad_results\n"
        "print(json.dumps({'package': ditto_spu.__file__, 'configs': str(configs_dir()),\n"
        "  'modes': available_modes(), 'policy': len(load_policy('minilm_ditto_puma').overrides),\n"
        "  'stock_policy': STOCK_POLICY, 'qad': qad_results()['held_out_cosine_mean']}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(target)) and got["configs"].startswith(str(target))
    assert {"puma", "mpcformer", "ditto", "ditto-puma", "ditto-2quad"} <= set(got["modes"])
    assert got["policy"] > 0 and got["stock_policy"].startswith(str(target))
    assert 0 < got["qad"] <= 1
