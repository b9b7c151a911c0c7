"""Quantum example: a Bell-state circuit run on the Braket device of the hybrid job that runs the electron.

The task asks the job which device it was given (``AMZN_BRAKET_DEVICE_ARN``): a QPU or on-demand
simulator ARN on AWS, or ``local:braket/<simulator>`` for the Braket SDK's LocalSimulator, which
runs inside the job itself (and in local mode on this machine). Run it with examples/quickstart.py,
or import ``bell_counts`` into your own workflow.
"""

from __future__ import annotations


def bell_counts(shots: int = 1000) -> dict[str, int]:
    """Prepare (|00> + |11>)/sqrt(2) on the job's device and return the measurement counts."""
    import os

    from braket.circuits import Circuit

    device_arn = os.environ.get("AMZN_BRAKET_DEVICE_ARN", "local:braket/braket_sv")
    if device_arn.startswith("local:"):
        from braket.devices import LocalSimulator

        device = LocalSimulator(device_arn.split("/", 1)[1])
    else:
        from braket.aws import AwsDevice

        # Inside a hybrid job the SDK passes the job token with each task, so QPU tasks get the
        # job's priority access.
        device = AwsDevice(device_arn)
    circuit = Circuit().h(0).cnot(0, 1)
    print(f"running a Bell circuit with {shots} shots on {device_arn}")
    counts = device.run(circuit, shots=shots).result().measurement_counts
    return dict(sorted(counts.items()))
