"""optiforge's training loop against a plain hand-written PyTorch loop.

Same model, data, optimizer, schedule-free SGD and seed; the plain loop uses
the same per-epoch shuffling rule, so the final weights must be identical.
Both run alternately in one process and the median epoch time is compared.

    python benchmarks/loop_overhead.py [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import optiforge
from optiforge.data.loaders import make_loader


def plain_loop(model, data, epochs, batch_size, lr, momentum, seed):
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    inputs = torch.stack([data.train[i][0] for i in range(len(data.train))])
    targets = torch.stack([torch.as_tensor(data.train[i][1]) for i in range(len(data.train))])
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        model.train()
        for batch in torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order.tolist()), batch_size=batch_size
        ):
            loss = F.cross_entropy(model(batch[0]), batch[1])
            loss.item()  # the optiforge loop reads the loss every step too
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


class EpochTimer(optiforge.Callback):
    def __init__(self):
        self.times, self.start = [], 0.0

    def on_epoch_start(self, state):
        self.start = time.perf_counter()

    def on_epoch_end(self, state):
        self.times.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = optiforge.build_data(optiforge.DataConfig(name="mnist1d", val_fraction=0.0))
    # materialise the split once so both loops index the same tensors
    data.train = torch.utils.data.TensorDataset(
        *[torch.stack(t) for t in zip(*[data.train[i] for i in range(len(data.train))], strict=True)]
    )
    torch.manual_seed(0)
    initial = optiforge.build_model(optiforge.ModelConfig(name="cnn1d", channels=[32, 64, 64]), data)
    config = optiforge.TrainConfig(
        epochs=args.epochs, batch_size=64, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}
    )
    ours_times, plain_times = [], []
    for _ in range(args.repeats):
        ours, plain = copy.deepcopy(initial), copy.deepcopy(initial)
        timer = EpochTimer()
        optiforge.train(ours, data, config, callbacks=[timer], progress=False)
        ours_times += timer.times[1:]  # the first epoch includes one-off set-up on both sides
        plain_times += plain_loop(plain, data, args.epochs, 64, 0.05, 0.9, config.seed)[1:]
        pairs = zip(ours.state_dict().values(), plain.state_dict().values(), strict=True)
        identical = all(torch.equal(a, b) for a, b in pairs)
    ours_median, plain_median = statistics.median(ours_times), statistics.median(plain_times)
    print(
        f"epochs {args.epochs} × repeats {args.repeats}, cnn1d 32-64-64 on MNIST-1D (3,600 train signals), "
        f"batch 64, {args.threads} threads"
    )
    print(f"plain PyTorch loop : {plain_median * 1000:8.1f} ms/epoch (median)")
    print(f"optiforge.train    : {ours_median * 1000:8.1f} ms/epoch (median)")
    print(f"ratio optiforge/plain: {ours_median / plain_median:.3f}")
    print(f"final weights identical: {identical}")
    _ = make_loader  # the shuffling rule the plain loop mirrors lives there


if __name__ == "__main__":
    main()
