"""Amos against AdamW at equal steps: pre-training from random weights, and a CoSENT fine-tune.

Both optimizers get the same schedule (warmup then linear decay), data, seed and steps. Their
rates are matched where they can be: a kernel of fan-in m starts with steps of ξ/√m under
Amos, so ξ = √256 × the AdamW rate makes the first steps of the model's 256-wide kernels equal.
Writes ``results.json``, a Markdown table and ``amos-vs-adamw.png`` (loss per epoch) into
``--work-dir``; each run keeps its own work directory below it, so a re-run resumes.

    python -m pretrained.compare_optimizers --work-dir runs/optimizers
"""

from __future__ import annotations

import argparse
import json
import math
import os

from bert4x.arguments import positive_number, whole_number
from bert4x.cli import main as bert4x_main
from bert4x.training import read_metrics_log
from pretrained import pretrain

STS_B = os.path.join(os.path.dirname(__file__), "data", "sts-b-zh")
#: Amos' ξ for an AdamW rate: the 256-wide kernels' first steps then match.
AMOS_PER_ADAMW_RATE = math.sqrt(pretrain.MODEL_CONFIG["hidden_size"])


def rate_for(algorithm: str, adamw_rate: float) -> float:
    return adamw_rate * AMOS_PER_ADAMW_RATE if algorithm == "amos" else adamw_rate


def run_pretraining(args, algorithm):
    work_dir = os.path.join(args.work_dir, f"pretrain-{algorithm}")
    accuracy = pretrain.main([
        "--work-dir", work_dir, "--epochs", str(args.epochs),
        "--steps-per-epoch", str(args.steps_per_epoch), "--optimizer", algorithm,
        "--learning-rate", str(rate_for(algorithm, args.pretrain_rate))])
    return accuracy, read_metrics_log(os.path.join(work_dir, "metrics.jsonl"))


def run_cosent(args, algorithm):
    work_dir = os.path.join(args.work_dir, f"cosent-{algorithm}")
    status = bert4x_main([
        "cosent", "train", "--train", os.path.join(STS_B, "train.data"),
        "--dev", os.path.join(STS_B, "valid.data"), "--test", os.path.join(STS_B, "test.data"),
        "--label-range", "0", "5", "--epochs", str(args.cosent_epochs), "--batch-size", "32",
        "--learning-rate", str(rate_for(algorithm, args.cosent_rate)),
        "--optimizer", algorithm, "--work-dir", work_dir])
    if status:
        raise SystemExit(f"bert4x cosent train with {algorithm} exited with {status}")
    with open(os.path.join(work_dir, "results.json")) as handle:
        scores = json.load(handle)["cosent"]
    return scores, read_metrics_log(os.path.join(work_dir, "metrics.jsonl"))


def plot(histories: dict, path: str) -> None:
    """Loss per epoch of each run: pre-training on the left, the fine-tune on the right."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(10, 3.8))
    for axis, stage in zip(axes, ("pretraining", "cosent")):
        for algorithm, history in histories[stage].items():
            axis.plot([r["epoch"] for r in history], [r["loss"] for r in history],
                      marker="o", label=algorithm)
        axis.set_title(f"{stage}: training loss")
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="runs/optimizers")
    parser.add_argument("--epochs", type=whole_number(), default=10,
                        help="pre-training epochs (a point of the loss curve each)")
    parser.add_argument("--steps-per-epoch", type=whole_number(), default=50)
    parser.add_argument("--pretrain-rate", type=positive_number, default=5e-4,
                        help="AdamW's peak rate; Amos gets sqrt(256) times it")
    parser.add_argument("--cosent-epochs", type=whole_number(), default=4)
    parser.add_argument("--cosent-rate", type=positive_number, default=1e-4)
    args = parser.parse_args(argv)
    results, histories = {}, {"pretraining": {}, "cosent": {}}
    for algorithm in ("adamw", "amos"):
        accuracy, histories["pretraining"][algorithm] = run_pretraining(args, algorithm)
        scores, histories["cosent"][algorithm] = run_cosent(args, algorithm)
        results[algorithm] = dict(
            held_out_mlm_accuracy=accuracy,
            final_pretraining_loss=histories["pretraining"][algorithm][-1]["loss"],
            cosent_dev=scores["dev"], cosent_test=scores["test"],
            final_cosent_loss=histories["cosent"][algorithm][-1]["loss"])
    table = ["| optimizer | held-out MLM accuracy | last pre-training loss | CoSENT dev | "
             "CoSENT test | last CoSENT loss |", "|---|---|---|---|---|---|"]
    table += [f"| {name} | {r['held_out_mlm_accuracy']:.4f} | {r['final_pretraining_loss']:.3f} "
              f"| {r['cosent_dev']:.2f} | {r['cosent_test']:.2f} | {r['final_cosent_loss']:.4f} |"
              for name, r in results.items()]
    print("\n".join(table))
    with open(os.path.join(args.work_dir, "results.json"), "w") as handle:
        json.dump(dict(results=results, histories=histories), handle, indent=1)
    with open(os.path.join(args.work_dir, "results.md"), "w") as handle:
        handle.write("\n".join(table) + "\n")
    plot(histories, os.path.join(args.work_dir, "amos-vs-adamw.png"))
    return results


if __name__ == "__main__":
    main()
