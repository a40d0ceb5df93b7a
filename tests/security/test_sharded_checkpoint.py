"""A sharded (FSDP/DTensor) checkpoint's metadata cannot run code on resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, pickle, sys, socket
    from pathlib import Path
    import torch, torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    from torch.distributed.fsdp import fully_shard
    from optiforge.errors import TrainingError
    from optiforge.parallel.dtensor_state import load_sharded, save_sharded

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        fully_shard(model)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    folder, marker = Path(sys.argv[1]), Path(sys.argv[2])
    model, optimizer = make()
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    saved = save_sharded(model, optimizer, folder, 1)
    other, other_optimizer = make()
    load_sharded(other, other_optimizer, saved, folder)
    same = all(torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(model.parameters(), other.parameters()))
    print("round trip", same, int(other_optimizer.state_dict()["state"][0]["step"]))

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "sharded-1" / ".metadata").write_bytes(pickle.dumps(Payload()))
    try:
        load_sharded(other, other_optimizer, saved, folder)
    except TrainingError as error:
        print("refused:", error)
    dist.destroy_process_group()
    """
)


@pytest.mark.distributed
def test_crafted_sharded_metadata_is_refused_and_a_real_one_loads(tmp_path):
    marker = tmp_path / "ran"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ckpt"), str(marker)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "round trip True 1" in result.stdout
    assert "refused: sharded checkpoint metadata names 'posix.system'" in result.stdout
    assert not marker.exists()
