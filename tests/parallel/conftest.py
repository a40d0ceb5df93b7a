"""The two-process measurements, launched once for every test in this folder."""

import pytest
from parallel_launch import worker_results


@pytest.fixture(scope="session")
def two_process_results(tmp_path_factory) -> list[dict]:
    """Per rank: ``equivalence`` (rank 0's is compared), ``ddp_options`` and ``fsdp_accumulation``."""
    return worker_results("two_process_worker.py", tmp_path_factory.mktemp("two_processes"), timeout=300)
