"""GPU example: a matrix product on the training instance's GPU, for SageMaker jobs on ml.g5 / ml.p4d.

The task uses PyTorch and the GPU when the job's image and instance have them (the GPU image from
container/, on a GPU instance type), and says plainly which device it ran on: PyTorch on the CPU
where no GPU is visible, NumPy where PyTorch is not installed (local mode on this machine).
"""

from __future__ import annotations


def matmul_checksum(n: int = 512) -> dict[str, object]:
    """Multiply two seeded n x n matrices and return where it ran and a checksum of the product."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        if torch.cuda.is_available():
            device, where = torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"
            print(f"using GPU {torch.cuda.get_device_name(0)} (PyTorch {torch.__version__}, CUDA {torch.version.cuda})")
        else:
            device, where = torch.device("cpu"), "cpu (PyTorch)"
            print(f"no GPU: no CUDA device is visible to PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}); running on the CPU")
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.rand(n, n, generator=g).to(device)
        b = torch.rand(n, n, generator=g).to(device)
        checksum = float((a @ b).sum().item())
        return {"device": where, "checksum": round(checksum, 3)}
    import numpy as np

    print("no GPU: PyTorch is not installed in this image; running on the CPU with NumPy")
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    return {"device": "cpu", "checksum": round(float((a @ b).sum()), 3)}
