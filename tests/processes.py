"""Start ``python -m landscape`` as the ranks of a two-process gloo group, as torchrun starts its workers.

The workers get the environment torchrun gives them (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT, one thread each) but without torchrun's launcher process, which costs about 3 s of start-up
per call on two cores. One test (``test_two_process_curvature_matches_one_process``) still goes through
``python -m torch.distributed.run`` itself.
"""

import os
import socket
import subprocess
import sys
import tempfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(args, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI with ``args`` on ranks 0 and 1; stdout is rank 0's, stderr both ranks', the exit code the
    larger of the two."""
    port = free_port()
    procs, files = [], []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # no pipe can fill and block a rank
        files.append((out, err))
        procs.append(subprocess.Popen([sys.executable, "-m", "landscape", *args], stdout=out, stderr=err, env=env,
                                      text=True))
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = []
    for out, err in files:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    return subprocess.CompletedProcess(args, max(codes), stdout=texts[0][0], stderr=texts[0][1] + texts[1][1])
