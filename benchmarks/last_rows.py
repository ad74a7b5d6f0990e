"""Time one evaluation forward whole against ``last=1`` (only the final row in the final layer).

    OMP_NUM_THREADS=1 python benchmarks/last_rows.py cope rope alibi

Uses the cpu preset's task model (the evaluation that scores only a task's answer) at 32x the training length,
with the cpu preset's evaluation batch; prints both times and the largest difference in the final row's logits.
"""

from __future__ import annotations

import argparse
import time

import torch

from posenc.experiment.spec import RunSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", nargs="+", help="card ids")
    ap.add_argument("--factor", type=int, default=32, help="length as a multiple of the training length")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for method in args.methods:
        spec = RunSpec.create(method, preset="cpu")
        p = spec.preset
        model = spec.model(spec.finetune_scale(), p.arch(task=True)).eval()
        length = args.factor * p.train_len
        x = torch.randint(0, 256, (max(1, p.eval_batch_tokens // length), length))
        with torch.no_grad():
            model(x, last=1)  # warm-up
            t0 = time.perf_counter()
            full, _ = model(x)
            t1 = time.perf_counter()
            part, _ = model(x, last=1)
            t2 = time.perf_counter()
        diff = float((full[:, -1:] - part).abs().max())
        print(f"{method}: whole {t1 - t0:.2f} s, last=1 {t2 - t1:.2f} s, largest logit difference {diff:.1e}")


if __name__ == "__main__":
    main()
