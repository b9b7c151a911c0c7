"""An offline table of Braket devices: GetDevice and SearchDevices without AWS.

Sources:
- botocore ``braket/2019-09-01``: ``GetDeviceResponse`` (``deviceArn``, ``deviceName``,
  ``providerName``, ``deviceType`` QPU|SIMULATOR, ``deviceStatus`` ONLINE|OFFLINE|RETIRED,
  ``deviceCapabilities`` a JSON document as a string, ``deviceQueueInfo`` a list of ``{queue,
  queueSize, queuePriority}``), ``SearchDevicesFilter`` ("Only deviceArn filter name is currently
  supported"), ``SearchDevicesRequestMaxResultsInteger`` (1..100).
- Amazon Braket developer guide, "Amazon Braket supported devices": the managed simulators SV1
  (34 qubits), DM1 (17 qubits) and TN1 (50 qubits), ARNs
  ``arn:aws:braket:::device/quantum-simulator/amazon/{sv1,dm1,tn1}`` (no region: available in
  every Braket region; TN1 not in every one, unconfirmed here, so it is listed everywhere); QPU
  ARNs carry the region they live in (``arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1``).
- Braket SDK ``braket/aws/aws_device.py``: ``REGIONS`` lists the Braket regions;
  ``get_device_region`` reads the ARN's region field; and
  ``braket/device_schema/simulators/gate_model_simulator_device_capabilities_v1.py`` (the schema
  a simulator's capabilities document must satisfy; its docstring example is the shape used here).
- Braket SDK ``braket/devices/local_simulator.py``: ``local:<provider>/<name>`` names an
  embedded simulator (``braket_sv``, ``braket_dm``, ``braket_ahs``); hybrid jobs accept such a
  ``deviceConfig.device`` (``AwsQuantumJob.create``: "When using embedded simulators, you may
  provide the device argument as a string of the form: local:<provider>/<simulator_name>").
  GetDevice has no answer for them in AWS.

The QPU capability documents are abbreviated (header, service and paradigm's qubit count), not
the full documents AWS serves; queue sizes are always "0". Both are the emulator's choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from byoc_executor.local.job_types import ApiError

REGIONS = ("us-east-1", "us-west-1", "us-west-2", "eu-west-2", "eu-north-1")
LOCAL_SIMULATORS = ("local:braket/braket_sv", "local:braket/braket_dm", "local:braket/braket_ahs")


@dataclass(frozen=True)
class Device:
    """One device of the table."""

    arn: str
    name: str
    provider: str
    kind: str  # QPU | SIMULATOR
    qubits: int
    shots: tuple[int, int]
    schema: str

    @property
    def region(self) -> str | None:
        """The region in the ARN; None for a simulator available in every region."""
        return self.arn.split(":")[3] or None

    def available_in(self, region: str) -> bool:
        return self.region is None or self.region == region

    def capabilities(self) -> dict[str, Any]:
        """The capabilities document (see the module docstring for what is abbreviated)."""
        doc: dict[str, Any] = {
            "braketSchemaHeader": {"name": self.schema, "version": "1"},
            "service": {
                "braketSchemaHeader": {"name": "braket.device_schema.device_service_properties", "version": "1"},
                "executionWindows": [{"executionDay": "Everyday", "windowStartHour": "00:00", "windowEndHour": "23:59:59"}],
                "shotsRange": list(self.shots),
                "deviceLocation": self.region or "us-east-1",
                "updatedAt": "2024-01-01T00:00:00+00:00",
            },
            "action": {
                "braket.ir.openqasm.program": {
                    "actionType": "braket.ir.openqasm.program",
                    "version": ["1"],
                    "supportedOperations": ["h", "x", "y", "z", "cnot", "rx", "ry", "rz", "cz", "swap"],
                    "supportedResultTypes": [{"name": "Probability", "minShots": 0, "maxShots": self.shots[1]}],
                }
            },
            "deviceParameters": {},
        }
        if self.kind == "SIMULATOR":
            doc["paradigm"] = {
                "braketSchemaHeader": {"name": "braket.device_schema.simulators.gate_model_simulator_paradigm_properties", "version": "1"},
                "qubitCount": self.qubits,
            }
        else:
            doc["paradigm"] = {
                "braketSchemaHeader": {"name": "braket.device_schema.gate_model_qpu_paradigm_properties", "version": "1"},
                "qubitCount": self.qubits,
                "nativeGateSet": [],
                "connectivity": {"fullyConnected": True, "connectivityGraph": {}},
            }
        return doc

    def get_device(self) -> dict[str, Any]:
        """The GetDevice answer."""
        queues = [
            {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": "0", "queuePriority": "Normal"},
            {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": "0", "queuePriority": "Priority"},
            {"queue": "JOBS_QUEUE", "queueSize": "0"},
        ]
        return {**self.summary(), "deviceCapabilities": json.dumps(self.capabilities()), "deviceQueueInfo": queues}

    def summary(self) -> dict[str, Any]:
        """The DeviceSummary of SearchDevices."""
        return {"deviceArn": self.arn, "deviceName": self.name, "providerName": self.provider, "deviceType": self.kind, "deviceStatus": "ONLINE"}


_SIM = "braket.device_schema.simulators.gate_model_simulator_device_capabilities"
DEVICES = (
    Device("arn:aws:braket:::device/quantum-simulator/amazon/sv1", "SV1", "Amazon Braket", "SIMULATOR", 34, (0, 100_000), _SIM),
    Device("arn:aws:braket:::device/quantum-simulator/amazon/dm1", "dm1", "Amazon Braket", "SIMULATOR", 17, (0, 100_000), _SIM),
    Device("arn:aws:braket:::device/quantum-simulator/amazon/tn1", "TN1", "Amazon Braket", "SIMULATOR", 50, (1, 999), _SIM),
    Device("arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1", "Forte 1", "IonQ", "QPU", 36, (1, 10_000), "braket.device_schema.ionq.ionq_device_capabilities"),
    Device("arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet", "Garnet", "IQM", "QPU", 20, (1, 20_000), "braket.device_schema.iqm.iqm_device_capabilities"),
    Device("arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3", "Ankaa-3", "Rigetti", "QPU", 84, (10, 100_000), "braket.device_schema.rigetti.rigetti_device_capabilities"),
)


def find(arn: str, region: str) -> Device | None:
    """The device ``arn`` as a client in ``region`` sees it (None: not found there)."""
    for device in DEVICES:
        if device.arn == arn and device.available_in(region):
            return device
    return None


def is_local_simulator(arn: str) -> bool:
    """``local:<provider>/<name>``: an embedded simulator the job's own code runs."""
    provider, _, name = arn.removeprefix("local:").partition("/")
    return arn.startswith("local:") and bool(provider) and bool(name)


def get_device(arn: str, region: str) -> dict[str, Any]:
    """GetDevice.

    Raises:
        ApiError: ResourceNotFoundException (404) for a device not in the table or not in ``region``
            (AWS's message text is unconfirmed).
    """
    device = find(arn, region)
    if device is None:
        raise ApiError("ResourceNotFoundException", f"Braket device '{arn}' not found in {region}", 404)
    return device.get_device()


def search_devices(body: dict, region: str) -> list[dict[str, Any]]:
    """SearchDevices' summaries, before pagination: only ``deviceArn`` filters, as the model says.

    Raises:
        ApiError: ValidationException for any other filter name.
    """
    devices = [d for d in DEVICES if d.available_in(region)]
    for search_filter in body.get("filters", []):
        if search_filter.get("name") != "deviceArn":
            raise ApiError("ValidationException", f"Unsupported filter name: {search_filter.get('name')}. Only deviceArn is supported.")
        values = search_filter.get("values", [])
        devices = [d for d in devices if d.arn in values]
    return [d.summary() for d in devices]
