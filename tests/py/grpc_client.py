"""A gRPC client for the end-to-end tests (see grpc_server.py), with grpcio.

Usage:
  grpc_client.py TARGET unary MESSAGE
  grpc_client.py TARGET bidi COUNT     ping-pong: each message waits for the last echo
  grpc_client.py TARGET fail CODE MESSAGE REASON
  grpc_client.py TARGET slow SECONDS

Prints one JSON object: the status code's name and details, the replies (as text),
and the initial and trailing metadata (-bin values in hex).
"""

import json
import queue
import sys

import grpc

SERVICE = "trellis.test.Echo"
# Longer than any wait a story asks for: a deadline of the mesh, not of this client.
DEADLINE = 30


def metadata(pairs):
    return {
        key: value.hex() if isinstance(value, bytes) else value
        for key, value in (pairs or ())
    }


def outcome(call, replies):
    return {
        "code": call.code().name,
        "details": call.details() or "",
        "replies": [reply.decode("utf-8", "replace") for reply in replies],
        "initial_metadata": metadata(call.initial_metadata()),
        "trailing_metadata": metadata(call.trailing_metadata()),
    }


def unary(channel, method, request):
    call_method = channel.unary_unary(f"/{SERVICE}/{method}")
    try:
        reply, call = call_method.with_call(request, timeout=DEADLINE)
        return outcome(call, [reply])
    except grpc.RpcError as call:
        return outcome(call, [])


def bidi(channel, count):
    echoed = queue.Queue()

    def requests():
        for n in range(count):
            yield f"ping {n}".encode()
            # The next message waits for this one's echo: only a proxy that streams
            # both ways at once lets the call finish.
            echoed.get(timeout=DEADLINE)

    call = channel.stream_stream(f"/{SERVICE}/Bidi")(requests(), timeout=DEADLINE)
    replies = []
    try:
        for reply in call:
            replies.append(reply)
            echoed.put(reply)
    except grpc.RpcError:
        pass
    return outcome(call, replies)


def main():
    target, scenario, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        if scenario == "unary":
            result = unary(channel, "Unary", args[0].encode())
        elif scenario == "bidi":
            result = bidi(channel, int(args[0]))
        elif scenario == "fail":
            spec = {"code": int(args[0]), "message": args[1], "reason": args[2]}
            result = unary(channel, "Fail", json.dumps(spec).encode())
        elif scenario == "slow":
            result = unary(channel, "Slow", args[0].encode())
        else:
            sys.exit(f"unknown scenario {scenario}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
