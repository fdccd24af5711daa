"""Calls the CRI socket with Python grpcio, the way a Python tool would: `unix:` target,
grpcio's own default `:authority` unless one is given. Requests and responses are raw
protobuf bytes in hex (the Rust test encodes and decodes them with the same proto).

usage: grpcio_call.py SOCKET AUTHORITY|- METHOD HEX [METHOD HEX ...]
prints one line per call: "ok HEX" or "err CODE DETAILS"
"""
import sys

import grpc


def main():
    sock, authority, calls = sys.argv[1], sys.argv[2], sys.argv[3:]
    options = [] if authority == "-" else [("grpc.default_authority", authority)]
    with grpc.insecure_channel("unix:" + sock, options=options) as channel:
        for method, request in zip(calls[0::2], calls[1::2]):
            call = channel.unary_unary(
                method,
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            try:
                response = call(bytes.fromhex(request), timeout=30)
                print("ok", response.hex(), flush=True)
            except grpc.RpcError as e:
                print("err", e.code().name, e.details(), flush=True)


if __name__ == "__main__":
    main()
