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


def test_a_built_wheel_in_a_fresh_venv_runs_a_tiny_ditto_inference(tmp_path):
    """Build the wheel, install it (no dependencies) into a fresh venv whose dependencies
    come from this environment's site-packages (offline: no index), and run the
    `ditto-spu` command from a directory outside the checkout."""
    import site
    import venv

    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dist.glob("ditto_spu-*.whl")
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    fresh_site = next((env_dir / "lib").glob("python3*/site-packages"))
    # the dependencies (jax, spu, flax, ...) from this environment; its .pth files (our
    # editable install among them) are not processed for a directory named in a .pth
    (fresh_site / "deps_from_test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = env_dir / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_PRELOAD")}
    env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run(
        [str(env_dir / "bin" / "ditto-spu"), "infer", "--model", "tiny", "--mode", "ditto", "--seq-len", "8",
         "--text", "hello secure world", "--json"],
        capture_output=True, text=True, cwd=work, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout[out.stdout.index("{"):])
    # random tiny weights at the default FXP32[f=8]: SPU's truncation noise alone gives
    # 0.9989–0.9995 over six runs (0.999 failed one CI run); a wrong install gives ~0
    assert result["mode"] == "ditto" and result["cosine_emulation"] > 0.995, result
    probe = subprocess.run(
        [str(python), "-c", "import ditto_spu, passes; print(ditto_spu.__file__); print(passes.__file__)"],
        capture_output=True, text=True, cwd=work, env=env, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert all(line.startswith(str(env_dir)) for line in probe.stdout.split()), probe.stdout
