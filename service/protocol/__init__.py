"""The Open Inference Protocol, independent of the wire: typed requests, validation, outputs.

``request``: the types both adapters copy into; ``parse``: the one validation; ``params``: request
parameters and names (also used by /classify); ``response``: the output tensors of an answer.
"""

from service.protocol.parse import parse
from service.protocol.request import (
    InferCall,
    InferRequest,
    OutputSpec,
    RequestedOutput,
    TensorData,
)

__all__ = ["InferCall", "InferRequest", "OutputSpec", "RequestedOutput", "TensorData", "parse"]
