"""Distillation benchmark: how much of the teacher–student gap a distilled student closes.

Peers are measured in one run, same data, same student initialisation, same
epochs and optimizer:

- MNIST-1D: teacher cnn1d (64-128-128); student MLP (128-64) trained
  (a) alone, (b) alone with the same cutmix inputs, (c) by naive distillation
  (soft targets, no mixing), (d) by consistent teaching (cutmix seen by both
  models, soft targets only, long schedule).
- digits: teacher MLP (256-128); student MLP (100-50, a quarter of the
  parameters) alone vs distilled.

Gap closed = (student − student alone) / (teacher − student alone).

    .venv/bin/python benchmarks/distillation.py                 # about 5 minutes on 2 idle cores
    .venv/bin/python benchmarks/distillation.py --epochs 100    # quicker, smaller effect
"""

from __future__ import annotations

import argparse
import time

import torch

import optiforge
from optiforge import DataConfig, ModelConfig, TrainConfig
from optiforge.distillation import DistillConfig, distill
from optiforge.distillation.agreement import top1_agreement

STUDENT_TRAIN = TrainConfig(
    optimizer={"name": "adamw", "lr": 0.003, "weight_decay": 0.01}, schedule={"name": "onecycle"}, batch_size=64
)


def accuracy(model: torch.nn.Module, data) -> float:
    return optiforge.measure(
        model, data, config=optiforge.MeasureConfig(latency_repeats=1, throughput_repeats=1, warmup=0)
    ).value


def fresh_student(spec: dict, data, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return optiforge.build_model(ModelConfig(**spec), data)


def run_family(title: str, data, teacher, student_spec: dict, epochs: int, peers: dict, seed: int) -> list[dict]:
    teacher_acc = accuracy(teacher, data)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rows = [
        {"method": "teacher", "accuracy": teacher_acc, "params": params(teacher), "seconds": None, "agreement": 1.0}
    ]
    for name, config in peers.items():
        student = fresh_student(student_spec, data, seed)
        started = time.perf_counter()
        if config is None:
            optiforge.train(student, data, STUDENT_TRAIN.model_copy(update={"epochs": epochs}), progress=False)
        else:
            student = distill(
                teacher,
                student,
                data,
                config.model_copy(update={"finetune": config.finetune.model_copy(update={"epochs": epochs})}),
                train=STUDENT_TRAIN,
                progress=False,
            )
        rows.append(
            {
                "method": name,
                "accuracy": accuracy(student, data),
                "params": params(student),
                "seconds": time.perf_counter() - started,
                "agreement": top1_agreement(student, teacher, data.test),
            }
        )
    alone = rows[1]["accuracy"]
    gap = teacher_acc - alone
    print(f"\n### {title} ({epochs} student epochs)\n")
    print("| method | test accuracy | params | agreement with teacher | gap closed | seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        closed = "" if row["method"] == "teacher" else f"{(row['accuracy'] - alone) / gap:.0%}" if gap > 0 else "n/a"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        print(
            f"| {row['method']} | {row['accuracy']:.3f} | {row['params']:,} | {row['agreement']:.3f} | {closed} "
            f"| {seconds} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300, help="student epochs on MNIST-1D (default 300)")
    parser.add_argument("--digits-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    data = optiforge.build_data(DataConfig(name="mnist1d"))
    torch.manual_seed(args.seed)
    teacher = optiforge.build_model(ModelConfig(name="cnn1d", channels=[64, 128, 128]), data)
    optiforge.train(
        teacher,
        data,
        TrainConfig(
            optimizer={"name": "adamw", "lr": 0.005, "weight_decay": 0.01}, schedule={"name": "onecycle"}, epochs=30
        ),
        progress=False,
    )
    rows = run_family(
        "MNIST-1D: cnn1d 64-128-128 → MLP 128-64",
        data,
        teacher,
        {"name": "mlp", "hidden": [128, 64]},
        args.epochs,
        {
            "student alone": None,
            "student alone + cutmix": DistillConfig(loss={"alpha": 0.0}, mixing={"kind": "cutmix"}),
            "naive KD (T=4, α=0.9, no mixing)": DistillConfig(
                loss={"temperature": 4.0, "alpha": 0.9}, mixing={"kind": "none"}
            ),
            "consistent KD (cutmix, T=2, α=1)": DistillConfig(
                loss={"temperature": 2.0, "alpha": 1.0}, mixing={"kind": "cutmix"}
            ),
        },
        args.seed,
    )
    augmented = rows[2]["accuracy"]
    consistent = rows[4]["accuracy"]
    teacher_acc = rows[0]["accuracy"]
    if teacher_acc > augmented:
        print(
            f"\nconsistent KD vs the student alone with the same cutmix inputs: "
            f"{(consistent - augmented) / (teacher_acc - augmented):.0%} of that smaller gap closed"
        )

    digits = optiforge.build_data(DataConfig(name="digits"))
    torch.manual_seed(args.seed)
    teacher = optiforge.build_model(ModelConfig(name="mlp", hidden=[256, 128], dropout=0.1), digits)
    optiforge.train(
        teacher,
        digits,
        TrainConfig(
            optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.001},
            schedule={"name": "cosine", "warmup_epochs": 1},
            epochs=30,
        ),
        progress=False,
    )
    run_family(
        "digits: MLP 256-128 → MLP 100-50",
        digits,
        teacher,
        {"name": "mlp", "hidden": [100, 50]},
        args.digits_epochs,
        {
            "student alone": None,
            "KD (mixup/cutmix, T=2, α=0.9)": DistillConfig(loss={"temperature": 2.0, "alpha": 0.9}),
        },
        args.seed,
    )


if __name__ == "__main__":
    main()
