"""Calls one method of Dex's gRPC API with stubs generated from issuer/proto/api.proto (grpcio).

    python dex_client.py STUBS_DIR ADDR METHOD REQUEST_JSON

REQUEST_JSON is the request message in protobuf's JSON mapping (field names as in the .proto; bytes in
base64). Prints {"ok": RESPONSE} with every field present, or {"error": {"code": NAME, "details": TEXT}}
when the server answers with a status other than OK.
"""

import json
import sys


def main():
    stubs, addr, method, request = sys.argv[1:5]
    sys.path.insert(0, stubs)
    import grpc
    from google.protobuf import json_format

    import api_pb2
    import api_pb2_grpc

    descriptor = api_pb2.DESCRIPTOR.services_by_name["Dex"].methods_by_name[method]
    message = json_format.ParseDict(json.loads(request), getattr(api_pb2, descriptor.input_type.name)())
    with grpc.insecure_channel(addr) as channel:
        stub = api_pb2_grpc.DexStub(channel)
        try:
            response = getattr(stub, method)(message, timeout=30)
        except grpc.RpcError as e:
            print(json.dumps({"error": {"code": e.code().name, "details": e.details()}}))
            return
    # Scalars at their default value (not_found: false) are printed too.
    result = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    print(json.dumps({"ok": result}))


if __name__ == "__main__":
    main()
