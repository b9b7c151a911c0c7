"""GPU example: a matrix product on the training instance's GPU, for SageMaker jobs on ml.g5 / ml.p4d.

The task uses PyTorch and the GPU when the job's image and instance have them (the GPU image from
container/, on a GPU instance type), and says plainly when it runs on the CPU instead (for instance
in local mode on a machine with no GPU, where it falls back to NumPy).
"""

from __future__ import annotations


def matmul_checksum(n: int = 512) -> dict[str, object]:
    """Multiply two seeded n x n matrices and return where it ran and a checksum of the product."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
        print(f"using GPU {name}")
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.rand(n, n, generator=g).to(device)
        b = torch.rand(n, n, generator=g).to(device)
        checksum = float((a @ b).sum().item())
        return {"device": f"cuda ({name})", "checksum": round(checksum, 3)}
    import numpy as np

    reason = "PyTorch is not installed in this image" if torch is None else "no CUDA device is visible"
    print(f"no GPU: {reason}; running on the CPU with NumPy")
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    return {"device": "cpu", "checksum": round(float((a @ b).sum()), 3)}
