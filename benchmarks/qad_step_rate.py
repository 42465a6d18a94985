"""Training speed of `ditto-spu distill`: steps per second, the first (compiling) step excluded.

    python benchmarks/qad_step_rate.py --json out.json -- <ditto-spu distill arguments>

Runs the distill command unchanged and times every optimisation step through the
trainer's ``on_step`` hook, so two versions of the code can be compared back to back
with the same command (run this file with the other version first on PYTHONPATH).
"""

from __future__ import annotations

import json
import sys
import time


def main(argv) -> int:
    out = None
    if "--json" in argv[: argv.index("--")]:
        out = argv[argv.index("--json") + 1]
    distill_args = argv[argv.index("--") + 1 :]
    from ditto_spu.distill import trainer

    stamps: list = []
    run = trainer.Distiller.run

    def timed_run(self, *args, **kwargs):
        user = kwargs.pop("on_step", None)

        def on_step(step, stage, loss):
            stamps.append(time.perf_counter())
            if user is not None:
                user(step, stage, loss)

        return run(self, *args, on_step=on_step, **kwargs)

    trainer.Distiller.run = timed_run
    from ditto_spu.cli import main as cli_main

    code = cli_main(["distill", *distill_args])
    if len(stamps) < 3:
        raise SystemExit("fewer than 3 steps ran: cannot time steps after the first")
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    result = {"steps_timed": len(stamps) - 1, "steps_per_s": rate, "seconds_per_step": 1 / rate,
              "code": trainer.__file__, "command": ["ditto-spu", "distill", *distill_args]}
    print(json.dumps(result), file=sys.stderr)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
