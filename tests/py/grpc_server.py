"""A gRPC app for the end-to-end tests, served by grpcio with generic handlers.

Service trellis.test.Echo, messages as raw bytes (no .proto, no generated code):

- Unary: echoes the request; sends initial metadata x-server-name and trailing
  metadata x-echo-trailer and x-seen-client-id (the trellis-client-id it was given).
- Bidi: echoes each message of the stream as it comes.
- Fail: the request is JSON {"code": N, "message": M, "reason": R}; aborts with
  status N and message M, trailing metadata x-reason: R and x-detail-bin.
- Slow: the request is a number of seconds; waits that long, then answers "slow".

Usage: grpc_server.py PORT NAME. Prints "listening" once it is.
"""

import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "trellis.test.Echo"
# A binary trailer: grpc carries -bin metadata base64-encoded; it must come back whole.
DETAIL = bytes([0, 1, 2, 0xFE, 0xFF])
CODES = {code.value[0]: code for code in grpc.StatusCode}


def client_id(context):
    return dict(context.invocation_metadata()).get("trellis-client-id", "")


def main():
    port, name = int(sys.argv[1]), sys.argv[2]

    def unary(request, context):
        context.send_initial_metadata((("x-server-name", name),))
        context.set_trailing_metadata(
            (("x-echo-trailer", "unary"), ("x-seen-client-id", client_id(context)))
        )
        return request

    def bidi(requests, context):
        context.send_initial_metadata((("x-server-name", name),))
        count = 0
        for message in requests:
            count += 1
            yield message
        context.set_trailing_metadata((("x-echo-count", str(count)),))

    def fail(request, context):
        spec = json.loads(request)
        context.set_trailing_metadata(
            (("x-reason", spec["reason"]), ("x-detail-bin", DETAIL))
        )
        context.abort(CODES[spec["code"]], spec["message"])

    def slow(request, context):
        time.sleep(float(request))
        return b"slow"

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print(f"{name} listening on port {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
